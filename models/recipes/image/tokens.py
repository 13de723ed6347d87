"""Turn the emoji image set into class-conditional token sequences for the AR image model.

    python -m models.recipes.image.tokens [--data runs/image/data.npz] [--vq DIR] [--out runs/image/ar]

The grid follows the data's image size (the VQ's convolutions take 32 or 64 pixels).

Each image becomes [class token] + its h·w VQ codes in raster order. Vocabulary: codes 0..K−1,
class c at K + c, and the null class K + C (the unconditional prefix of classifier-free guidance,
used for ``condition_dropout`` of the training rows). Training images are augmented (horizontal
flip × shifts of ±2 pixels on white) before tokenising; held-out images are not.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.recipes.image.data import load_dataset

SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
CONDITION_DROPOUT = 0.1


def augment(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N · 2 · len(SHIFTS), H, W, 3]: flips × shifts, vacated pixels white."""
    out = []
    for flipped in (images, images[:, :, ::-1]):
        for dy, dx in SHIFTS:
            moved = np.full_like(flipped, 255)
            h, w = flipped.shape[1:3]
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            moved[:, yd, xd] = flipped[:, ys, xs]
            out.append(moved)
    return np.concatenate(out)


@torch.no_grad()
def encode_all(tokenizer, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 [N, H, W, 3] -> codes [N, h·w] int16."""
    codes = []
    for i in tqdm(range(0, len(images), batch), desc="tokenise", mininterval=10):
        codes.append(tokenizer.encode(torch.from_numpy(np.ascontiguousarray(images[i:i + batch]))).flatten(1).cpu())
    return torch.cat(codes).numpy().astype(np.int16)


def build(data_path: Path, vq_dir: Path, out: Path, device: str = "cpu") -> dict:
    from modalities.image.tokenizer import ImageTokenizer

    data = load_dataset(data_path)
    tokenizer = ImageTokenizer.from_pretrained(vq_dir, device=device, image_size=data["images"].shape[1])
    K, C = tokenizer.codebook_size, len(data["class_names"])
    train = data["split"] == 0
    images = [augment(data["images"][train]), data["images"][~train]]
    labels = [np.tile(data["labels"][train], 2 * len(SHIFTS)), data["labels"][~train]]
    codes = [encode_all(tokenizer, x) for x in images]
    tokens = np.concatenate([np.concatenate([(K + lab)[:, None], c], 1) for lab, c in zip(labels, codes)])
    split = np.concatenate([np.zeros(len(labels[0]), np.int8), np.ones(len(labels[1]), np.int8)])
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "tokens.npz", tokens=tokens.astype(np.int16),
                        mask=np.ones((len(tokens), tokens.shape[1] - 1), bool), split=split)
    h, w = tokenizer.grid_size
    meta = {"modality": "image", "vocab_size": K + C + 1, "codebook_size": K, "grid_size": [h, w],
            "image_size": tokenizer.image_size, "class_names": [str(c) for c in data["class_names"]],
            "class_token_offset": K, "null_token": K + C, "bos": K + C, "eos": K + C, "pad": K + C,
            "unconditional_prefix": [K + C], "condition_dropout": CONDITION_DROPOUT,
            "seq_len": int(tokens.shape[1]), "train_sequences": int((split == 0).sum()),
            "heldout_sequences": int((split == 1).sum())}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("runs/image/data.npz"))
    ap.add_argument("--vq", type=Path, default=Path("runs/image/vq-cpu/export"))
    ap.add_argument("--out", type=Path, default=Path("runs/image/ar"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    meta = build(args.data, args.vq, args.out, args.device)
    print(json.dumps({k: meta[k] for k in ("vocab_size", "seq_len", "train_sequences", "heldout_sequences")}))


if __name__ == "__main__":
    main()
