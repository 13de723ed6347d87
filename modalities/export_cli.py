"""`multispec export`: write a drafter trained here in the format vLLM / SGLang / speculators load, and
print the command lines that serve it (a thin layer over :mod:`models.export`)."""
from __future__ import annotations

import argparse
import sys

import torch

FORMATS = ("eagle3", "speculators")


def run_export(args) -> int:
    from models import export, zoo
    from models.feature_heads import load_head, load_medusa

    from .text.loading import load_model, load_tokenizer

    dtype = getattr(torch, args.dtype)
    if args.kind == "draft":
        folder = zoo.resolve(args.draft)
        out = export.export_draft_model(load_model(folder, "draft"), load_tokenizer(folder, "draft tokenizer"), args.out)
        kind = "draft"
    else:
        target_folder = zoo.resolve(args.target)
        target = load_model(target_folder, "target")
        if args.kind == "eagle":
            head = load_head(zoo.resolve(args.head), target)
            out = export.export_eagle3(head, target, args.out, str(target_folder), args.format == "speculators",
                                       args.num_speculative_tokens, dtype)
            kind = args.format
        else:
            out = export.export_medusa(load_medusa(zoo.resolve(args.head), target), args.out, dtype)
            kind = "medusa"
    print(f"wrote {out}", file=sys.stderr)
    target_name = str(zoo.resolve(args.target)) if args.target else "TARGET"
    print(export.serving_commands(kind, target_name, str(out), args.num_speculative_tokens))
    return 0


def register(commands) -> None:
    parser = commands.add_parser("export", help="write a trained drafter for vLLM, SGLang or speculators")
    kinds = parser.add_subparsers(dest="kind", required=True)
    eagle = kinds.add_parser("eagle", help="an EAGLE head in EAGLE-3's layout (trained with --layout eagle3)")
    eagle.add_argument("--head", required=True, help="the head's folder or registry name")
    eagle.add_argument("--format", choices=FORMATS, default="eagle3",
                       help="eagle3: vLLM and SGLang (LlamaForCausalLMEagle3); speculators: PyPI speculators 0.9")
    medusa = kinds.add_parser("medusa", help="Medusa heads in vLLM's layout (full vocabulary)")
    medusa.add_argument("--head", required=True, help="the heads' folder")
    draft = kinds.add_parser("draft", help="a draft model as a plain Hugging Face checkpoint")
    draft.add_argument("--draft", required=True, help="the draft model's folder or registry name")
    for sub in (eagle, medusa, draft):
        sub.add_argument("--target", required=sub is not draft,
                         help="the target (folder or registry name) the drafter serves")
        sub.add_argument("--out", required=True, help="the folder to write")
        sub.add_argument("--num-speculative-tokens", type=int, default=3, help="k in the printed commands")
        sub.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
        sub.set_defaults(run=run_export)
