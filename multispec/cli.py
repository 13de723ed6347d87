"""The `multispec` command: each modality registers its own subcommands (text, image, speech)."""
from __future__ import annotations

import argparse
import importlib
import sys

MODALITY_CLIS = ("modalities.text.cli", "modalities.image.cli", "modalities.speech.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multispec", description="Speculative decoding for text, images, speech.")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="benchmark methods against plain decoding and peers")
    bench_modalities = bench.add_subparsers(dest="modality", required=True)
    for name in MODALITY_CLIS:
        module = importlib.import_module(name)
        module.register(commands)
        module.register_bench(bench_modalities)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging
    logging.disable_progress_bar()
    try:
        return args.run(args)
    except ValueError as error:
        print(f"multispec: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
