"""The bundled text models: they load, generate, and every exact method equals plain greedy on held-out prompts."""
import json
import shutil

import pytest
import torch

import multispec
from modalities.text import make_drafter
from multispec.methods import method_from_names
from models import zoo

from conftest import hf_greedy


@pytest.fixture(scope="module")
def bundled():
    target, tokenizer = zoo.load("text-target")
    draft, draft_tokenizer = zoo.load("text-draft")
    assert tokenizer.get_vocab() == draft_tokenizer.get_vocab()
    return target, draft, tokenizer


def heldout_prompts(per_kind: int = 4):
    records = [json.loads(line) for line in zoo.text_prompts_path().read_text().splitlines()]
    return [r["prompt"] for kind in ("prose", "code") for r in records if r["category"] == kind][:per_kind] + \
        [r["prompt"] for r in records if r["category"] == "code"][:per_kind]


def test_registry_lists_the_text_models():
    assert {"text-target", "text-draft"} <= set(zoo.list())
    with pytest.raises(KeyError, match="unknown bundled model"):
        zoo.path("text-huge")


def test_exact_methods_match_plain_greedy_on_heldout_prompts(bundled):
    target, draft, tokenizer = bundled
    assert not target.training and target.dtype == torch.float32
    for prompt in heldout_prompts():
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        reference = hf_greedy(target, ids, 24)
        for method in ("plain", "draft", "lookup", "layerskip"):
            out = multispec.generate(target, ids, drafter=make_drafter(method_from_names(method).drafter, target, draft), max_new_tokens=24)
            assert torch.equal(out.sequences, reference), f"{method} differs from greedy on {prompt[:40]!r}"


def test_bundled_sampling_runs(bundled):
    target, draft, tokenizer = bundled
    ids = tokenizer("And God said", return_tensors="pt").input_ids
    out = multispec.generate(target, ids, drafter=multispec.DraftModel(draft), max_new_tokens=16, temperature=0.8,
                             top_p=0.95, generator=torch.Generator().manual_seed(0))
    assert out.stats.new_tokens == 16 and out.stats.drafted > 0


def test_corrupt_or_missing_checkpoint_files_are_refused(tmp_path):
    folder = tmp_path / "text-draft"
    shutil.copytree(zoo.path("text-draft"), folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors is corrupt"):
        zoo.load_folder(folder)
    weights.unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        zoo.load_folder(folder)


def test_bench_takes_the_first_prompts_of_each_category_of_the_bundled_file():
    from modalities.text.cli import default_prompts
    everything, first_two = default_prompts(), default_prompts(2)
    categories = sorted({c for c, _ in everything})
    assert sorted(c for c, _ in first_two) == sorted(categories * 2)
    assert all(p in everything for p in first_two)


def test_every_bundled_token_model_card_passes_its_schema():
    """multispec.json of the bundled image and speech models is a typed card; a broken one is refused."""
    from modalities.image.generation import ImageMeta
    from modalities.speech.vocab import SpeechMeta
    for name, kind in (("image-target", ImageMeta), ("image-draft", ImageMeta), ("image64-target", ImageMeta),
                       ("image64-draft", ImageMeta), ("speech-target", SpeechMeta), ("speech-draft", SpeechMeta)):
        meta = kind.read(zoo.path(name))
        assert meta.vocab_size > meta.codebook_size > 0 and meta.to_dict() == json.loads(
            (zoo.path(name) / "multispec.json").read_text())
    card = json.loads((zoo.path("image-target") / "multispec.json").read_text())
    with pytest.raises(ValueError, match="lacks class_names"):
        ImageMeta.from_dict({k: v for k, v in card.items() if k != "class_names"})
    with pytest.raises(ValueError, match="grid_size must be a list of 2 integers, got \\[8\\]"):
        ImageMeta.from_dict({**card, "grid_size": [8]})


def test_the_bundled_64x64_pair_draws_a_16x16_grid_and_exact_drafting_equals_plain():
    """The default image models: 64x64 images from 256 codes of the shared 32x32-trained VQ."""
    import torch
    from modalities.image.generation import ImageModels, generate_image, generate_tokens
    from multispec.methods import DraftModelConfig, Method
    models = ImageModels.from_zoo()
    assert models.meta.image_size == 64 and models.tokenizer.grid_size == (16, 16) and models.num_tokens == 256
    plain = generate_tokens(models, "Flags", temperature=0.0)
    fast = generate_tokens(models, "Flags", Method(DraftModelConfig()), temperature=0.0)
    assert torch.equal(plain.tokens, fast.tokens) and fast.stats.steps < plain.stats.steps
    image, stats = generate_image(models, "Flags", generator=torch.Generator().manual_seed(0))
    assert image.size == (64, 64) and stats.new_tokens == 256


def test_the_image_command_writes_a_strip_of_64x64_images(tmp_path, capsys):
    from PIL import Image
    from modalities.cli import main
    out = tmp_path / "flags.png"
    assert main(["image", "--class", "Flags", "--num-images", "2", "--scale", "1", "--no-compare-plain",
                 "-o", str(out)]) == 0
    assert Image.open(out).size == (128, 64)
    assert "2 image(s) of 'Flags'" in capsys.readouterr().err


def test_the_image_bench_pools_seeds(tmp_path, capsys):
    """`multispec bench image --seeds`: one run per seed, then class accuracy and FD pooled per method."""
    import json
    from modalities.cli import main
    out = tmp_path / "bench"
    assert main(["bench", "image", "--size", "32", "--per-class", "1", "--methods", "draft", "--seeds", "0,1",
                 "--out", str(out)]) == 0
    pooled = json.loads((out / "pooled.json").read_text())
    assert pooled["seeds"] == [0, 1] and [r["method"] for r in pooled["rows"]] == ["plain", "draft"]
    assert all(len(r["class_accuracy_per_seed"]) == 2 and r["feature_fd"] is not None for r in pooled["rows"])
    seed0 = json.loads((out / "seed0" / "results.json").read_text())["rows"][0]
    assert pooled["rows"][0]["class_accuracy_per_seed"][0] == seed0["class_accuracy"]
    assert "| draft | 2 |" in capsys.readouterr().out
