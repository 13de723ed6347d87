"""The training command for the bundled models:

    python -m models.recipes.train text --preset cpu|gpu [--which target|draft|both] [--resume]
    python -m models.recipes.train image|speech --preset ...   (token LMs: models.recipes.token_lm)

Text runs here on the shared trainer (``models.recipes.trainer``) with the text token windows;
image and speech go to ``models.recipes.token_lm``. Interrupt with Ctrl-C: the checkpoint and an
export are saved, and ``--resume`` continues.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from models.recipes import token_lm
from models.recipes.presets import TrainSpec, get_preset
from models.recipes.trainer import WHICH, Stop, TokenWindows, heldout_windows, train_model


class TextData:
    """Random windows of the training token file and fixed held-out windows (no loss mask)."""

    def __init__(self, data_dir: Path, spec: TrainSpec):
        self.windows = TokenWindows(data_dir / "train.bin", spec.seq_len)
        self.heldout = heldout_windows(data_dir / "heldout.bin", spec.seq_len, spec.eval_tokens)
        self.heldout_mask = None

    def sample(self, batch: int, rng: np.random.Generator):
        return self.windows.sample(batch, rng)


def save_text_tokenizer(tokenizer_dir: Path):
    def save(export_dir: Path) -> None:
        from transformers import AutoTokenizer
        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(export_dir))
    return save


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the bundled target and drafter models.")
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("image", "speech"):
        return token_lm.main(argv)
    ap.add_argument("modality", choices=["text", "image", "speech"])
    ap.add_argument("--preset", required=True, choices=["cpu", "gpu"])
    ap.add_argument("--which", default="both", choices=["target", "draft", "both"])
    ap.add_argument("--out", type=Path, help="default runs/text/train-<preset>")
    ap.add_argument("--data", type=Path, default=Path("runs/text/tokens"))
    ap.add_argument("--tokenizer", type=Path, default=Path("runs/text/tokenizer"))
    ap.add_argument("--resume", action="store_true", help="continue from OUT's checkpoints")
    ap.add_argument("--max-minutes", type=float,
                    help="wall-clock budget for the whole command (default: the preset's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = ap.add_argument_group("overrides of the preset's TrainSpec (both models; for smoke runs)")
    for name in ("max_steps", "batch_size", "seq_len", "eval_every", "eval_tokens",
                 "checkpoint_every", "log_every", "warmup_steps"):
        g.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    preset = get_preset(args.preset).with_overrides(**{
        k: getattr(args, k) for k in ("max_steps", "batch_size", "seq_len", "eval_every",
                                      "eval_tokens", "checkpoint_every", "log_every",
                                      "warmup_steps")})
    out = args.out or Path(f"runs/text/train-{preset.name}")
    whiches = list(WHICH) if args.which == "both" else [args.which]
    minutes = {w: preset.train_spec(w).minutes for w in whiches}
    if args.max_minutes is not None:  # share the budget in the preset's proportions
        total = sum(minutes.values())
        minutes = {w: args.max_minutes * m / total for w, m in minutes.items()}
    Stop.install()
    t0 = time.perf_counter()
    for w in whiches:
        # ~3% of each share is left for evaluation, checkpointing and export
        train_model(w, preset, out, lambda spec: TextData(args.data, spec), 60 * minutes[w] * 0.97,
                    args.resume, torch.device(args.device), args.compile,
                    save_extra=save_text_tokenizer(args.tokenizer))
        if Stop.requested:
            raise SystemExit(f"interrupted: checkpoint and export of {w!r} saved; rerun with --resume")
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min -> {out}")


if __name__ == "__main__":
    main()
