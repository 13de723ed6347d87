"""Text demo: the same prompts decoded plainly and with each multispec drafter, streamed, with speedups.

Runs on the bundled text models when they are installed (models.zoo), otherwise on a tiny *random*
pair built on the spot (it says so: the text is gibberish and speedups mean little).

    python demos/text_generation.py [--max-new-tokens 64] [--prompt "..."]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from modalities.text import generate_text, load_pair, make_drafter, stream_text

PROMPTS = ["def fibonacci(n):\n    ", "And God said, Let there be"]


def load_models():
    try:
        from models import zoo
        target, tokenizer = zoo.load("text-target")
        draft, _ = zoo.load("text-draft")
        return target, draft, tokenizer, "bundled text-target / text-draft"
    except (ImportError, AttributeError, KeyError, FileNotFoundError):
        from models.tiny_random import save_pair
        directory = tempfile.mkdtemp(prefix="multispec-tiny-")
        paths = save_pair(directory)
        target, draft, tokenizer = load_pair(paths["target"], paths["draft"])
        return target, draft, tokenizer, "TINY RANDOM models (no bundled models installed): gibberish text"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", help="prompt(s) to decode (default: one prose, one code)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    from transformers.utils import logging
    logging.disable_progress_bar()

    target, draft, tokenizer, label = load_models()
    print(f"models: {label}; torch threads: {torch.get_num_threads()}\n")
    methods = ["plain", "draft", "lookup", "layerskip"]
    for prompt in args.prompt or PROMPTS:
        generate_text(prompt, target, tokenizer, max_new_tokens=4, stop_at_eos=False)  # warm-up
        plain_seconds = None
        for method in methods:
            drafter = make_drafter(method, target, draft)
            print(f"--- {method} ---")
            sys.stdout.write(prompt)
            start = time.perf_counter()
            stream = stream_text(prompt, target, tokenizer, drafter, max_new_tokens=args.max_new_tokens,
                                 stop_at_eos=False)
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            seconds = time.perf_counter() - start
            plain_seconds = plain_seconds or seconds
            print(f"\n[{method}] {stream.stats.summary()} speedup over plain: {plain_seconds / seconds:.2f}x\n")


if __name__ == "__main__":
    main()
