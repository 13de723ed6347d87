"""Trains the in-domain classifier of the 32x32 emoji images (``modalities.image.classifier``), used
to score generated images: class accuracy of class-conditional samples and a Frechet distance on its
penultimate features (see ``modalities/image/metrics.py``). Not Inception: numbers are only
comparable within this project.

    python -m models.recipes.image.classifier --data runs/image/data.npz --out runs/image/classifier [--device]

writes ``OUT/config.json`` + ``OUT/model.safetensors``; ``load_classifier(OUT)`` loads it back.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from modalities.image.classifier import ClassifierConfig, ImageClassifier, save_classifier


@dataclass(frozen=True)
class TrainPreset:
    epochs: int = 16
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    shift: int = 2  # random translation in pixels (reflect padding + crop)
    seed: int = 0


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation by up to ``shift`` px. x: float [B,3,H,W]."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = padded[:, :, dy:dy + h, dx:dx + w]
    return x


@torch.no_grad()
def accuracy(model: ImageClassifier, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> dict:
    """x float [N,3,32,32], y int64 [N] -> accuracy and class-balanced accuracy."""
    model.eval()
    pred = torch.cat([model.logits(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    correct = (pred == y).float()
    per_class = [correct[y == c].mean().item() for c in range(n_classes) if (y == c).any()]
    return {"accuracy": correct.mean().item(), "balanced_accuracy": sum(per_class) / len(per_class)}


def train(data_path: Path, out: Path, device: torch.device, p: TrainPreset = TrainPreset()) -> dict:
    """Train on the split-0 images, report on split 1, save to ``out``; returns the metrics."""
    with torch.random.fork_rng(devices=[]):  # seeded init and dropout, global RNG left untouched
        torch.manual_seed(p.seed)
        return _train(data_path, out, device, p)


def _train(data_path: Path, out: Path, device: torch.device, p: TrainPreset) -> dict:
    from models.recipes.image.data import load_dataset

    data = load_dataset(data_path)
    x = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    y = torch.from_numpy(data["labels"]).to(device)
    split = torch.from_numpy(data["split"]).to(device)
    xt, yt, xh, yh = x[split == 0], y[split == 0], x[split == 1], y[split == 1]
    n_classes = len(data["class_names"])
    gen = torch.Generator().manual_seed(p.seed)
    model = ImageClassifier(ClassifierConfig(n_classes, class_names=tuple(data["class_names"])))
    model.to(device)
    # People & Body is ~60% of the images: weight the loss by 1/sqrt(class frequency)
    freq = torch.bincount(yt, minlength=n_classes).float()
    weight = (freq.sum() / freq).sqrt()
    weight = weight / weight.mean()
    steps_per_epoch = (len(xt) + p.batch_size - 1) // p.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, p.lr, total_steps=p.epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(p.epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(xt), p.batch_size):
            idx = perm[i:i + p.batch_size]
            loss = F.cross_entropy(model.logits(augment(xt[idx], p.shift, gen)), yt[idx],
                                   weight=weight, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = accuracy(model, xh, yh, n_classes)
        print(f"epoch {epoch + 1}/{p.epochs} loss {total / len(xt):.3f} held-out acc "
              f"{acc['accuracy']:.3f} balanced {acc['balanced_accuracy']:.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    metrics = {**accuracy(model, xh, yh, n_classes), "train": accuracy(model, xt, yt, n_classes),
               "train_seconds": round(time.time() - t0, 1), "preset": asdict(p)}
    save_classifier(model, out, metrics)
    print(f"held-out accuracy {metrics['accuracy']:.3f} (balanced {metrics['balanced_accuracy']:.3f})"
          f" -> {out}")
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("runs/image/data.npz"))
    ap.add_argument("--out", type=Path, default=Path("runs/image/classifier"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--epochs", type=int, default=TrainPreset.epochs)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args.data, args.out, torch.device(args.device), TrainPreset(epochs=args.epochs))


if __name__ == "__main__":
    main()
