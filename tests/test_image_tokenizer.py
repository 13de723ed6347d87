"""Image modality groundwork: VQ tokenizer shapes/dtypes/errors on a tiny random VQModel, the
Frechet distance and PSNR metrics, and the in-domain classifier's save/load round trip (CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modalities.image.classifier import ClassifierConfig, ImageClassifier, load_classifier, save_classifier
from modalities.image import ImageTokenizer
from modalities.image.metrics import class_accuracy, extract_features, frechet_distance, psnr

K = 16  # codebook size of the tiny model
TRAINED = Path(__file__).resolve().parents[1] / "runs/image/vq-cpu/export"


@pytest.fixture(scope="module")
def tok() -> ImageTokenizer:
    from models.recipes.image.vq import VQShape

    torch.manual_seed(0)
    shape = VQShape(block_out_channels=(8, 8, 8), latent_channels=4, vq_embed_dim=4, codebook_size=K,
                    norm_num_groups=4)
    model = shape.build()
    with torch.no_grad():  # spread the codes so that random inputs use several of them
        model.quantize.embedding.weight.normal_(0, 0.3)
    return ImageTokenizer(model)


def images_uint8(n: int = 3, size: int = 32, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_properties(tok):
    assert tok.image_size == 32 and tok.grid_size == (8, 8) and tok.codebook_size == K
    assert tuple(tok.codebook.shape) == (K, 4)


def test_encode_formats_agree(tok):
    from PIL import Image

    arr = images_uint8()
    ids = tok.encode(arr)
    assert ids.dtype == torch.long and tuple(ids.shape) == (3, 8, 8)
    assert ids.min() >= 0 and ids.max() < K
    as_float = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(tok.encode(torch.from_numpy(arr)), ids)
    assert torch.equal(tok.encode(as_float), ids)
    assert torch.equal(tok.encode([Image.fromarray(a) for a in arr]), ids)
    assert torch.equal(tok.encode(Image.fromarray(arr[0])), ids[:1])


def test_decode_shapes(tok):
    ids = torch.randint(0, K, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    x = tok.decode_tensor(ids)
    assert x.dtype == torch.float32 and tuple(x.shape) == (2, 3, 32, 32)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(tok.decode_tensor(ids.view(2, 64)), x)  # flat row-major grid
    pils = tok.decode(ids)
    assert len(pils) == 2 and pils[0].size == (32, 32) and pils[0].mode == "RGB"
    again = tok.encode(pils)  # a round trip at least keeps shapes and dtypes
    assert again.shape == ids.shape and again.dtype == torch.long


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 16, 16, 3), np.uint8), "expected 32x32 images, got 16x16"),
    (np.zeros((1, 32, 32, 4), np.uint8), "3 (RGB) channels"),
    (torch.zeros(1, 1, 32, 32), "3 (RGB) channels"),
    (torch.zeros(1, 3, 64, 64), "expected 32x32 images, got 64x64"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.int32), "unsupported image dtype"),
    ("not an image", "expected PIL images"),
])
def test_encode_errors(tok, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tok.encode(bad)


@pytest.mark.parametrize("bad, message", [
    (torch.full((1, 64), K), "must be in"),
    (torch.full((1, 8, 8), -1), "must be in"),
    (torch.zeros(1, 63, dtype=torch.long), "expected 64 tokens"),
    (torch.zeros(1, 4, 16, dtype=torch.long), "expected tokens"),
    (torch.zeros(1, 64), "must be integers"),
])
def test_decode_errors(tok, bad, message):
    with pytest.raises(ValueError, match=message):
        tok.decode_tensor(bad)


def test_save_load_round_trip(tok, tmp_path):
    tok.model.save_pretrained(tmp_path, safe_serialization=True)
    assert list(tmp_path.glob("*.safetensors"))
    loaded = ImageTokenizer.from_pretrained(tmp_path)
    arr = images_uint8(2, seed=1)
    assert torch.equal(loaded.encode(arr), tok.encode(arr))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        ImageTokenizer.from_pretrained(tmp_path / "missing")


@pytest.mark.skipif(not TRAINED.exists(), reason="needs runs/image/vq-cpu/export (python -m models.recipes.image.vq)")
def test_trained_round_trip_is_mostly_stable():
    from models.recipes.image.data import load_dataset

    tok = ImageTokenizer.from_pretrained(TRAINED)
    data = load_dataset(TRAINED.parents[1] / "data.npz")
    imgs = data["images"][data["split"] == 1][:32]
    ids = tok.encode(imgs)
    assert (tok.encode(tok.decode(ids)) == ids).float().mean() > 0.5
    assert psnr(imgs, np.stack([np.asarray(p) for p in tok.decode(ids)])) > 15


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 6, generator=g) @ torch.randn(6, 6, generator=g)
    assert abs(frechet_distance(a, a)) < 1e-6
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)
    linalg = pytest.importorskip("scipy.linalg")  # the textbook formula with scipy's sqrtm
    b = torch.randn(1500, 6, generator=g) * 2 + 1
    mu_a, mu_b = a.double().mean(0).numpy(), b.double().mean(0).numpy()
    s_a, s_b = np.cov(a.double().numpy(), rowvar=False), np.cov(b.double().numpy(), rowvar=False)
    ref = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="feature dims differ"):
        frechet_distance(a, b[:, :5])


def test_psnr():
    a = images_uint8(2)
    assert psnr(a, a) > 90
    b = a.astype(np.int64)
    b = np.where(b < 255, b + 1, b - 1).astype(np.uint8)  # every value off by exactly 1
    assert psnr(a, b) == pytest.approx(10 * np.log10(255.0 ** 2), abs=1e-6)
    x = torch.from_numpy(a).permute(0, 3, 1, 2).double() / 127.5 - 1
    y = torch.from_numpy(b).permute(0, 3, 1, 2).double() / 127.5 - 1
    assert psnr(x, y) == pytest.approx(psnr(a, b), abs=1e-6)


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    clf = ImageClassifier(ClassifierConfig(3, channels=(4, 8, 8), feature_dim=16,
                                           class_names=("a", "b", "c"))).eval()
    save_classifier(clf, tmp_path, {"accuracy": 0.5})
    loaded = load_classifier(tmp_path)
    assert not loaded.training and loaded.config == clf.config
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(loaded.logits(x), clf.logits(x))
    assert tuple(extract_features(loaded, x).shape) == (5, 16)
    labels = loaded.logits(x).argmax(1)
    assert class_accuracy(loaded, x, labels) == 1.0
    with pytest.raises(ValueError, match="expected float images"):
        loaded.logits(torch.zeros(1, 3, 16, 16))
