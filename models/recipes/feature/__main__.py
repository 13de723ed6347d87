"""Train a feature drafter for any Hugging Face causal LM:

    python -m models.recipes.feature eagle --target text-target --out runs/eagle/text-target [--preset cpu]
    python -m models.recipes.feature eagle --target smollm2-135m-instruct --source spec-bench --out runs/eagle/smollm2
    python -m models.recipes.feature medusa --target text-target --out runs/medusa/text-target --export DIR

Stages (each reused when its output exists, so a killed run resumes): self-distilled sequences
(``sequences.json``, shared by both methods) and the target's features and top-k labels (eagle:
``data.safetensors`` with ``models.feature_heads.default_feature_layers``; medusa:
``medusa-data.safetensors`` with the final hidden state), then the head's training with checkpoints every ``eval_every`` steps (``checkpoint``
or ``medusa-checkpoint``), then the export (``--export DIR``: config.json, model.safetensors with
the training card) that :func:`models.feature_heads.load_head` or ``load_medusa`` reads. Medusa
trains ``--heads`` heads on ``batch × width`` random positions per step.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modalities.text.loading import load_model, load_tokenizer
from models import zoo
from models.feature_heads import (EagleHead, MedusaHead, eagle3_settings_for, medusa_settings_for, settings_for,
                                  settings_from_draft)
from models.recipes.feature import data as feature_data
from models.recipes.feature import eagle, medusa
from models.recipes.feature.training import draft_vocabulary


@dataclass(frozen=True)
class Preset:
    num_sequences: int
    new_tokens: int
    steps: int
    batch: int
    width: int
    unroll: int = 3
    lr: float = 1e-3
    eval_every: int = 200


PRESETS = {
    "smoke": Preset(num_sequences=8, new_tokens=16, steps=4, batch=2, width=32, unroll=2, eval_every=2),
    "cpu": Preset(num_sequences=2048, new_tokens=128, steps=2500, batch=4, width=256),
    "gpu": Preset(num_sequences=16384, new_tokens=256, steps=20000, batch=32, width=512, unroll=5),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a feature drafter (EAGLE-style or Medusa heads) on a frozen "
                                             "target.")
    ap.add_argument("method", choices=["eagle", "medusa"])
    ap.add_argument("--target", required=True, help="a registry name (text-target, smollm2-135m-instruct) or a folder")
    ap.add_argument("--out", type=Path, required=True, help="working folder (data, checkpoints, log)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--source", choices=feature_data.SOURCES, default="corpus",
                    help="prompts to self-distil on: corpus windows, Spec-Bench questions outside "
                    "the bench's slice, questions a chat target writes itself, or Spec-Bench's then its own")
    ap.add_argument("--corpus", type=Path, default=Path("runs/text/corpus"))
    ap.add_argument("--num-sequences", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--draft-vocab", type=int, default=8192, help="draft vocabulary size (capped at the target's)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heads", type=int, default=5, help="medusa: the number of heads K")
    ap.add_argument("--init-from", help="eagle: warm-start from this one-layer draft LM (folder or name, e.g. "
                    "text-draft): the head starts as that draft model and learns to read the target's features")
    ap.add_argument("--layout", choices=["concat", "eagle3"], default="concat",
                    help="eagle: the head's layout; eagle3 reads the layers vLLM and SGLang tap and exports to them")
    ap.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    ap.add_argument("--export", type=Path, help="write the trained head here")
    args = ap.parse_args(argv)
    if args.heads < 1:
        ap.error("--heads must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    preset = PRESETS[args.preset]
    folder = zoo.resolve(args.target)
    target = load_model(folder, "target")
    tokenizer = load_tokenizer(folder, "target tokenizer")
    for p in target.parameters():
        p.requires_grad_(False)
    draft = None
    if args.init_from and args.method != "eagle":
        ap.error("--init-from applies to eagle heads only")
    if args.method == "eagle":
        if args.init_from:
            draft = load_model(zoo.resolve(args.init_from), "--init-from draft")
            settings = settings_from_draft(target, draft)
        elif args.layout == "eagle3":
            settings = eagle3_settings_for(target, args.draft_vocab)
        else:
            settings = settings_for(target, args.draft_vocab)
        head = EagleHead({**settings, "draft_vocab_size": min(args.draft_vocab, settings["vocab_size"])},
                         target.get_input_embeddings())
    else:
        head = MedusaHead(medusa_settings_for(target, args.heads, args.draft_vocab))
    prefix = "" if args.method == "eagle" else "medusa-"
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = feature_data.build(args.out, target, tokenizer, args.source, args.num_sequences or preset.num_sequences,
                              args.new_tokens or preset.new_tokens, head.feature_layers, args.seed,
                              args.corpus, zoo.spec_bench_path(), name=prefix + "data")
    data_s = time.time() - started
    head.d2t.copy_(draft_vocabulary(data, head.vocab_size, head.d2t.shape[0]))
    steps = args.steps or preset.steps
    eval_every = min(preset.eval_every, steps)
    if args.method == "eagle":
        eagle.warm_start(head, draft if draft is not None else target)
        final = eagle.train(head, data, args.out, steps, preset.batch, preset.width, preset.unroll, args.lr or preset.lr,
                            args.seed, eval_every=eval_every)
        shape = {"unroll": preset.unroll}
    else:
        head.warm_start(target)
        final = medusa.train(head, data, args.out / "medusa-checkpoint", args.out / "medusa-log.json", steps,
                             preset.batch * preset.width, preset.lr, args.seed, eval_every=eval_every)
        shape = {"heads": args.heads, "rows_per_step": preset.batch * preset.width}
    card = {"target": str(args.target), "init_from": args.init_from, "lr": args.lr or preset.lr, "source": args.source, "sequences": int(data["offsets"].shape[0] - 1),
            "positions": int(data["tokens"].shape[0]), "preset": args.preset, "steps": steps, **shape,
            "data_seconds": round(data_s, 1),
            "draft_vocab_coverage": float(torch.isin(data["top_ids"][:, 0].long(), head.d2t).float().mean()),
            "final": final, "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "torch": torch.__version__}
    (args.out / f"{prefix}training.json").write_text(json.dumps(card, indent=1))
    if args.export:
        head.save(args.export, {"training": card})
        print(f"exported to {args.export}")
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
