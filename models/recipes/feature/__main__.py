"""Train a feature drafter for any Hugging Face causal LM:

    python -m models.recipes.feature eagle --target text-target --out runs/eagle/text-target [--preset cpu]
    python -m models.recipes.feature eagle --target smollm2-135m-instruct --source spec-bench --out runs/eagle/smollm2

Stages (each reused when its output exists, so a killed run resumes): self-distilled sequences and
the target's features and top-k labels (``data.safetensors``), then the head's training with
checkpoints every ``eval_every`` steps, then the export (``--export DIR``: config.json,
model.safetensors, training.json) that :func:`models.feature_heads.load_head` reads.
Only ``eagle`` is implemented; ``medusa`` is refused with a clear message.
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
from models.feature_heads import EagleHead, settings_for
from models.recipes.feature import data as feature_data
from models.recipes.feature import eagle


@dataclass(frozen=True)
class Preset:
    num_sequences: int
    new_tokens: int
    steps: int
    batch: int
    width: int
    unroll: int = 3
    lr: float = 5e-4
    eval_every: int = 200


PRESETS = {
    "smoke": Preset(num_sequences=8, new_tokens=16, steps=4, batch=2, width=32, unroll=2, eval_every=2),
    "cpu": Preset(num_sequences=2048, new_tokens=128, steps=2500, batch=4, width=256),
    "gpu": Preset(num_sequences=16384, new_tokens=256, steps=20000, batch=32, width=512, unroll=5),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a feature drafter (EAGLE-style) on a frozen target.")
    ap.add_argument("method", choices=["eagle", "medusa"])
    ap.add_argument("--target", required=True, help="a registry name (text-target, smollm2-135m-instruct) or a folder")
    ap.add_argument("--out", type=Path, required=True, help="working folder (data, checkpoints, log)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--source", choices=["corpus", "spec-bench"], default="corpus",
                    help="prompts to self-distil on: corpus windows or Spec-Bench questions outside the bench's slice")
    ap.add_argument("--corpus", type=Path, default=Path("runs/text/corpus"))
    ap.add_argument("--num-sequences", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--draft-vocab", type=int, default=8192, help="draft vocabulary size (capped at the target's)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", type=Path, help="write the trained head here")
    args = ap.parse_args(argv)
    if args.method == "medusa":
        raise SystemExit("medusa heads are not implemented yet; train an eagle head instead")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    preset = PRESETS[args.preset]
    folder = zoo.resolve(args.target)
    target = load_model(folder, "target")
    tokenizer = load_tokenizer(folder, "target tokenizer")
    for p in target.parameters():
        p.requires_grad_(False)
    settings = settings_for(target, args.draft_vocab)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = feature_data.build(args.out, target, tokenizer, args.source, args.num_sequences or preset.num_sequences,
                              args.new_tokens or preset.new_tokens, settings["feature_layers"], args.seed,
                              args.corpus, zoo.spec_bench_path())
    data_s = time.time() - started
    head = EagleHead({**settings, "draft_vocab_size": min(args.draft_vocab, settings["vocab_size"])},
                     target.get_input_embeddings())
    head.d2t.copy_(eagle.draft_vocabulary(data, settings["vocab_size"], head.d2t.shape[0]))
    eagle.warm_start(head, target)
    steps = args.steps or preset.steps
    final = eagle.train(head, data, args.out, steps, preset.batch, preset.width, preset.unroll, preset.lr,
                        args.seed, eval_every=min(preset.eval_every, steps))
    card = {"target": str(args.target), "source": args.source, "sequences": int(data["offsets"].shape[0] - 1),
            "positions": int(data["tokens"].shape[0]), "preset": args.preset, "steps": steps,
            "unroll": preset.unroll, "data_seconds": round(data_s, 1),
            "draft_vocab_coverage": float(torch.isin(data["top_ids"][:, 0].long(), head.d2t).float().mean()),
            "final": final, "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "torch": torch.__version__}
    (args.out / "training.json").write_text(json.dumps(card, indent=1))
    if args.export:
        head.save(args.export, {"training": card})
        print(f"exported to {args.export}")
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
