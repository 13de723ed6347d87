"""Train the image and speech targets and drafters on padded token sequences.

    python -m models.recipes.train image|speech --preset smoke|cpu|gpu [--which target|draft|both]
                                        [--data DIR] [--out DIR] [--resume] [--max-minutes M]

``DIR/tokens.npz`` (built by ``models.recipes.image.tokens`` / ``models.recipes.speech.tokens``) holds ``tokens``
[N, L] (padded), ``mask`` [N, L−1] (which next-token targets are scored) and ``split`` [N]
(0 train, 1 held-out); ``DIR/meta.json`` the vocabulary (size, special ids, the condition prefix
that classifier-free guidance drops). Both are copied into each exported model folder as
``multispec.json`` so the adapter can use the model. The loop is ``models.recipes.trainer``'s.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.recipes.decoding_masks import row_masks
from models.recipes.presets import ModelPreset, ModelShape, TrainSpec
from models.recipes.trainer import WHICH, Stop, train_model
from multispec.guidance import Mask, guided_forward

META_FILE = "multispec.json"


def _spec(**kw) -> TrainSpec:
    return TrainSpec(**{"warmup_steps": 100, "eval_every": 200, "eval_tokens": 65536,
                        "checkpoint_every": 500, **kw})


def _preset(name, target, draft, target_train, draft_train, notes) -> ModelPreset:
    return ModelPreset(name=name, target=target, draft=draft, target_train=target_train,
                       draft_train=draft_train, notes=notes)


SMOKE_SHAPE = ModelShape(hidden=32, layers=1, heads=2, kv_heads=2, intermediate=64)
SMOKE = dict(target=SMOKE_SHAPE, draft=SMOKE_SHAPE,
             target_train=_spec(max_steps=3, batch_size=4, seq_len=0, lr=1e-3, minutes=1, warmup_steps=1,
                                eval_every=2, eval_tokens=512, checkpoint_every=2),
             draft_train=_spec(max_steps=3, batch_size=4, seq_len=0, lr=1e-3, minutes=1, warmup_steps=1,
                               eval_every=2, eval_tokens=512, checkpoint_every=2, distill=0.8),
             notes="a few steps on tiny shapes: checks the pipeline end to end (tests, dry runs)")

# seq_len 0 = the dataset's own padded length.
PRESETS: dict[str, dict[str, ModelPreset]] = {
    "image": {
        "smoke": _preset("smoke", **SMOKE),
        "cpu": _preset(
            "cpu", ModelShape(hidden=256, layers=6, heads=4, kv_heads=4, intermediate=704, max_positions=128),
            ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384, max_positions=128),
            _spec(max_steps=4000, batch_size=32, seq_len=0, lr=1e-3, minutes=30),
            _spec(max_steps=3000, batch_size=32, seq_len=0, lr=2e-3, minutes=8, distill=0.8),
            "2 CPU cores, fp32: under 40 minutes for both models."),
        # 64x64 images, 16x16 = 256 codes per image (runs/image64/ar from the 32x32 VQ at image_size 64)
        "cpu64": _preset(
            "cpu64", ModelShape(hidden=256, layers=6, heads=4, kv_heads=4, intermediate=704, max_positions=320),
            ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384, max_positions=320),
            _spec(max_steps=6000, batch_size=16, seq_len=0, lr=1e-3, minutes=50, eval_tokens=32768),
            _spec(max_steps=4000, batch_size=16, seq_len=0, lr=2e-3, minutes=12, eval_tokens=32768, distill=0.8),
            "2 CPU cores, fp32: about an hour for both models at 257 tokens per sequence."),
        # cpu64's 6-layer target grown to 12 layers (models.recipes.surgery.grow_layers; --init-from) and
        # trained on with bf16 autocast (--bf16): more capacity, and a one-layer drafter half as dear relatively
        "cpu64-deep": _preset(
            "cpu64-deep", ModelShape(hidden=256, layers=12, heads=4, kv_heads=4, intermediate=704, max_positions=320),
            # the bundled image64-draft's shape, re-distilled from its weights (--draft-init-from)
            ModelShape(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=704, max_positions=320),
            _spec(max_steps=8000, batch_size=16, seq_len=0, lr=6e-4, minutes=70, eval_tokens=32768, warmup_steps=50),
            _spec(max_steps=4000, batch_size=16, seq_len=0, lr=1e-3, minutes=13, eval_tokens=32768, distill=0.8),
            "2 CPU cores, bf16 autocast: about 70 + 13 minutes, both warm-started (--init-from, --draft-init-from)."),
        # 64x64 on one H100 (models/recipes/gpu/image64_gpu.sh): a target whose step dwarfs the one-layer drafter's
        "gpu64": _preset(
            "gpu64", ModelShape(hidden=384, layers=12, heads=6, kv_heads=6, intermediate=1024, max_positions=320),
            ModelShape(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=704, max_positions=320),
            _spec(max_steps=8000, batch_size=128, seq_len=0, lr=1e-3, minutes=6.0, warmup_steps=200),
            _spec(max_steps=4000, batch_size=128, seq_len=0, lr=2e-3, minutes=2.0, distill=0.8),
            "One H100, bf16 autocast: about 8 minutes for both models (64x64, 257 tokens a sequence)."),
        "gpu": _preset(
            "gpu", ModelShape(hidden=320, layers=8, heads=5, kv_heads=5, intermediate=864, max_positions=128),
            ModelShape(hidden=192, layers=1, heads=3, kv_heads=3, intermediate=512, max_positions=128),
            _spec(max_steps=6000, batch_size=256, seq_len=0, lr=1e-3, minutes=2.5, warmup_steps=200),
            _spec(max_steps=4000, batch_size=256, seq_len=0, lr=2e-3, minutes=2.0, distill=0.8),
            "One H100, bf16 autocast: about 4.5 minutes for both models (drafter: --distill-guidance 3)."),
    },
    "speech": {
        "smoke": _preset("smoke", **SMOKE),
        "cpu": _preset(
            "cpu", ModelShape(hidden=256, layers=4, heads=4, kv_heads=4, intermediate=704, max_positions=1024),
            # one layer: a decode step costs about a quarter of the target's on this CPU (two layers,
            # which could look up the phone a frame names, cost a third and more)
            ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384, max_positions=1024),
            _spec(max_steps=6000, batch_size=8, seq_len=0, lr=1.5e-3, minutes=70),
            _spec(max_steps=3000, batch_size=8, seq_len=0, lr=2e-3, minutes=12, distill=0.8),
            "2 CPU cores, fp32: about 82 minutes for both models (aligned phone layout, 10k sentences)."),
        # the bundled pair: the cpu preset's 4-layer target grown to 12 layers (models.recipes.surgery.grow_layers,
        # the new blocks start as identities) and trained on; the drafter starts as layers 0 and 6
        # of that target (models.recipes.surgery.layer_subset: its width, embeddings and head) and is distilled from it
        "cpu-deep": _preset(
            "cpu-deep", ModelShape(hidden=256, layers=12, heads=4, kv_heads=4, intermediate=704, max_positions=1024),
            ModelShape(hidden=256, layers=2, heads=4, kv_heads=4, intermediate=704, max_positions=1024),
            _spec(max_steps=4000, batch_size=8, seq_len=0, lr=1e-3, minutes=45, warmup_steps=50),
            _spec(max_steps=3000, batch_size=8, seq_len=0, lr=1e-3, minutes=60, warmup_steps=50, distill=0.8),
            "2 CPU cores, fp32: about 105 minutes for both, warm-started (--init-from, --draft-init-from)."),
        "gpu": _preset(
            # eight layers: the CPU drafter (128x1) then costs about a tenth of a target step
            "gpu", ModelShape(hidden=384, layers=8, heads=6, kv_heads=6, intermediate=1024, max_positions=1024),
            ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384, max_positions=1024),
            _spec(max_steps=8000, batch_size=48, seq_len=0, lr=1e-3, minutes=5.5, warmup_steps=200),
            _spec(max_steps=6000, batch_size=48, seq_len=0, lr=2e-3, minutes=1.5, distill=0.8),
            "One H100, bf16 autocast: about 7 minutes for both models (models/recipes/gpu/speech_gpu.sh)."),
    },
}


class SequenceData:
    """Padded sequences with a loss mask; classifier-free guidance drops the condition prefix."""

    def __init__(self, folder: Path, spec: TrainSpec, meta: dict, balance: float = 0.0):
        """``balance`` α: training rows are drawn with probability ∝ count(their first token)^−α, so
        with a class-token prefix 0 keeps the data's class mix, 1 draws every class equally often
        and 0.5 is in between (a square-root re-balancing)."""
        with np.load(folder / "tokens.npz") as f:
            tokens, mask, split = f["tokens"].astype(np.int64), f["mask"].astype(bool), f["split"]
        if tokens.shape[1] != mask.shape[1] + 1:
            raise ValueError(f"{folder}/tokens.npz: mask must have one column fewer than tokens")
        self.train, self.train_mask = torch.from_numpy(tokens[split == 0]), torch.from_numpy(mask[split == 0])
        held = np.nonzero(split == 1)[0]
        per_row = max(1, int(mask[held].sum(1).mean())) if len(held) else 1
        held = held[: max(1, spec.eval_tokens // per_row)]
        self.heldout, self.heldout_mask = torch.from_numpy(tokens[held]), torch.from_numpy(mask[held])
        self.null_prefix = torch.tensor(meta.get("unconditional_prefix") or [], dtype=torch.long)
        self.drop = float(meta.get("condition_dropout", 0.0))
        if len(self.train) == 0 or len(self.heldout) == 0:
            raise ValueError(f"{folder}/tokens.npz needs training and held-out sequences")
        self.row_probs = first_token_weights(self.train[:, 0], balance) if balance else None

    def sample(self, batch: int, rng: np.random.Generator):
        rows = torch.from_numpy(rng.choice(len(self.train), size=batch, p=self.row_probs) if self.row_probs is not None
                                else rng.integers(0, len(self.train), size=batch))
        tokens, mask = self.train[rows].clone(), self.train_mask[rows]
        if self.drop and len(self.null_prefix):  # unconditional rows for classifier-free guidance
            dropped = torch.from_numpy(rng.random(batch) < self.drop)
            tokens[dropped, : len(self.null_prefix)] = self.null_prefix
        last = int(mask.any(0).nonzero().max()) + 2  # trim the padding no row in the batch needs
        return tokens[:, :last], mask[:, : last - 1]


def first_token_weights(first: torch.Tensor, balance: float) -> np.ndarray:
    """first [N] (each row's first token) -> [N] sampling probabilities ∝ count(first token)^−balance."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must lie in [0, 1], got {balance}")
    _, inverse, counts = torch.unique(first, return_inverse=True, return_counts=True)
    weights = counts[inverse].double() ** -balance
    return (weights / weights.sum()).numpy()


class GuidedTeacher(torch.nn.Module):
    """The target as decoding shapes it, as a distillation teacher: under classifier-free guidance
    (logits u + s·(c − u), u from the same rows with the condition prefix replaced by the null prefix)
    and the decoding masks, through :func:`multispec.guidance.guided_forward` (decoding's own code). A
    drafter distilled towards guided logits drafts the guided distribution without running guidance
    itself (one row, not two).

    ``masks``: rows [B, T] -> their mask (see :func:`multispec.guidance.allowed_at`), e.g.
    :func:`models.recipes.decoding_masks.row_masks`; None masks nothing."""

    def __init__(self, model: torch.nn.Module, null_prefix: list[int], scale: float,
                 masks: Callable[[torch.Tensor], Mask] | None = None):
        super().__init__()
        self.model, self.scale, self.masks = model, scale, masks
        self.register_buffer("null_prefix", torch.tensor(null_prefix, dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor, **kwargs):
        """input_ids [B, T] -> an output whose ``logits`` [B, T, V] are guided and masked."""
        logits = guided_forward(lambda ids: self.model(input_ids=ids, **kwargs).logits, input_ids, scale=self.scale,
                                unconditional_prefix=self.null_prefix,
                                allowed=None if self.masks is None else self.masks(input_ids))
        return type("Output", (), {"logits": logits})()


def save_meta(meta: dict):
    def save(export_dir: Path) -> None:
        (export_dir / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return save


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description="Train the bundled image or speech target and drafter.")
    ap.add_argument("modality", choices=sorted(PRESETS))
    ap.add_argument("--preset", required=True, choices=sorted({name for presets in PRESETS.values() for name in presets}))
    ap.add_argument("--which", default="both", choices=["target", "draft", "both"])
    ap.add_argument("--data", type=Path, help="default runs/<modality>/ar")
    ap.add_argument("--out", type=Path, help="default runs/<modality>/train-<preset>")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--max-minutes", type=float, help="budget for the whole command (default: the preset's)")
    ap.add_argument("--max-steps", type=int, help="override both models' steps")
    ap.add_argument("--lr", type=float, help="override both models' peak learning rate (e.g. lower, to go on "
                    "training a model warm-started with --init-from)")
    ap.add_argument("--balance", type=float, default=0.0,
                    help="draw training rows ∝ count(first token)^-BALANCE: 0 keeps the data's class mix, 1 "
                         "samples every class (first token) equally, 0.5 is square-root re-balancing")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU too (on CUDA it is always on)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--distill-guidance", type=float, help="distil the drafter towards the target under this "
                    "classifier-free guidance scale (the drafter then drafts without guidance)")
    ap.add_argument("--init-from", type=Path, help="warm-start the target from these safetensors weights "
                    "(same shape; e.g. a run on an earlier layout of the same vocabulary)")
    ap.add_argument("--draft-init-from", type=Path, help="warm-start the drafter from these safetensors "
                    "weights (same shape; e.g. the drafter of a smaller target)")
    ap.add_argument("--draft-shape", help="override the drafter's hidden,layers,heads,intermediate")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True
    data_dir = args.data or Path(f"runs/{args.modality}/ar")
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise SystemExit(f"{meta_path} missing: build the token dataset first (python -m models.{args.modality}_tokens)")
    meta = json.loads(meta_path.read_text())
    if args.preset not in PRESETS[args.modality]:
        raise SystemExit(f"{args.modality} has no preset {args.preset!r}; it has {', '.join(PRESETS[args.modality])}")
    preset = PRESETS[args.modality][args.preset]
    preset = preset.with_overrides(max_steps=args.max_steps, lr=args.lr, seq_len=meta["seq_len"])
    if args.draft_shape:
        hidden, layers, heads, inter = (int(v) for v in args.draft_shape.split(","))
        preset = replace(preset, draft=ModelShape(hidden, layers, heads, heads, inter, preset.draft.max_positions))
    out = args.out or Path(f"runs/{args.modality}/train-{preset.name}")
    whiches = list(WHICH) if args.which == "both" else [args.which]
    minutes = {w: preset.train_spec(w).minutes for w in whiches}
    if args.max_minutes is not None:
        total = sum(minutes.values())
        minutes = {w: args.max_minutes * m / total for w, m in minutes.items()}
    Stop.install()
    t0 = time.perf_counter()
    for w in whiches:
        shape = preset.shape(w)
        config = shape.config(meta["vocab_size"], bos=meta["bos"], eos=meta["eos"], pad=meta["pad"])
        config = replace_positions(config, meta["seq_len"])
        export_meta, scale = meta, 1.0
        if w == "draft" and args.distill_guidance:  # the drafter learns the guided target, runs unguided
            export_meta, scale = {**meta, "draft_guidance_distilled": args.distill_guidance}, args.distill_guidance
        if args.balance:  # the card says how the rows were drawn
            export_meta = {**export_meta, "train_balance": args.balance}
        # the teacher is the target as decoding shapes it: guided (if asked) and masked as decoding masks it
        wrap = lambda t: GuidedTeacher(t, meta["unconditional_prefix"], scale, row_masks(t, meta))  # noqa: E731
        train_model(w, preset, out, lambda spec: SequenceData(data_dir, spec, meta, args.balance),
                    60 * minutes[w] * 0.97,
                    args.resume, torch.device(args.device), False, config=config,
                    save_extra=save_meta(export_meta), wrap_teacher=wrap,
                    init_from=args.init_from if w == "target" else args.draft_init_from,
                    amp=True if args.bf16 else None)
        if Stop.requested:
            raise SystemExit(f"interrupted: checkpoint and export of {w!r} saved; rerun with --resume")
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min -> {out}")


def replace_positions(config, seq_len: int):
    """Room for the dataset's longest sequence (RoPE needs no table, but HF checks the config)."""
    config.max_position_embeddings = max(config.max_position_embeddings, seq_len)
    return config
