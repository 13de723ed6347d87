"""The `multispec` command: each modality registers its own subcommands (text, image, speech).
The command line sits above the adapters and below the recipes; the core knows nothing of it."""
from __future__ import annotations

import argparse
import sys

from modalities.image import cli as image_cli
from modalities.speech import cli as speech_cli
from modalities import export_cli
from modalities.text import cli as text_cli

MODALITY_CLIS = (text_cli, image_cli, speech_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multispec", description="Speculative decoding for text, images, speech.")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="benchmark methods against plain decoding and peers")
    bench_modalities = bench.add_subparsers(dest="modality", required=True)
    for module in MODALITY_CLIS:
        module.register(commands)
        module.register_bench(bench_modalities)
    export_cli.register(commands)
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
