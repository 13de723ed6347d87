"""`multispec speech` and `multispec bench speech`: thin argparse layers over the speech adapter."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .. import report
from . import bench
from multispec.methods import Method

from ..method_args import add_method_arguments, method_from_args
from .generation import ACCEPTANCES, DRAFTERS, SpeechModels, generate_codes


def load_models(args) -> SpeechModels:
    """The models the flags name. Without --target the bundled target is used, and --draft or
    --codec replace the bundled drafter or codec; with --target, --codec is needed and --draft optional."""
    from models import zoo  # each flag: a folder or a registry name; zoo.resolve verifies named ones
    codec, draft = (None if flag is None else zoo.resolve(flag) for flag in (args.codec, args.draft))
    if args.target is not None:
        if codec is None:
            raise ValueError("--target needs --codec (the codec folder)")
        return SpeechModels.from_folders(zoo.resolve(args.target), codec, draft)
    try:
        if codec is None and draft is None:
            return SpeechModels.from_zoo()
        return SpeechModels.from_folders(zoo.resolve("speech-target"), codec or zoo.resolve("speech-codec"),
                                         draft or zoo.resolve("speech-draft"))
    except (KeyError, FileNotFoundError) as error:
        raise ValueError("no bundled speech models are installed: pass --target, --codec (and --draft)") from error


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="speech model folder (default: bundled speech-target)")
    parser.add_argument("--draft", help="draft model folder (default: bundled speech-draft)")
    parser.add_argument("--codec", help="codec folder: multispec MelRVQ, or Hugging Face EnCodec, DAC or Mimi "
                        "(default: bundled speech-codec)")
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature; 0 = greedy (default: the model's default_temperature)")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run_speech(args) -> int:
    import soundfile

    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    method = method_from_args(args)
    kwargs = dict(temperature=args.temperature, top_k=args.top_k, max_seconds=args.max_seconds)
    sample = generate_codes(models, args.text, method, generator=torch.Generator().manual_seed(args.seed), **kwargs)
    wave = models.codec.decode(sample.frames) if sample.frames.shape[0] else torch.zeros(0)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out, wave.numpy(), models.codec.sample_rate)
    stats = sample.stats
    line = (f"[{method.name}] {wave.numel() / models.codec.sample_rate:.2f} s of audio -> {out}: "
            f"{stats.summary()}")
    if args.compare_plain and method.drafter is not None:
        t0 = time.perf_counter()
        generate_codes(models, args.text, Method(), generator=torch.Generator().manual_seed(args.seed),
                       **kwargs)
        plain = time.perf_counter() - t0
        line += f" | plain {plain:.2f} s, speedup {plain / stats.wall_s:.2f}x"
    print(line, file=sys.stderr)
    return 0


def default_sentences(n: int) -> list[str]:
    from models import zoo
    if not zoo.SPEECH_PROMPTS.is_file():
        raise ValueError(f"no held-out sentence file at {zoo.SPEECH_PROMPTS}: pass --sentences FILE")
    return load_sentences(zoo.SPEECH_PROMPTS, n)


def load_sentences(path, n: int | None) -> list[str]:
    """.jsonl with a "text" field per line, or .txt with one sentence per line."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    texts = [json.loads(ln)["text"] for ln in lines] if str(path).endswith(".jsonl") else lines
    return texts[:n] if n else texts


def run_bench(args) -> int:
    seeds = report.parse_seeds(args.seeds) if args.seeds else None
    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    sentences = load_sentences(args.sentences, args.num_sentences) if args.sentences else \
        default_sentences(args.num_sentences)
    methods = bench.select_methods(args.methods) if args.methods else bench.WITH_JACOBI if args.jacobi else None

    def one_run(seed: int, out: Path) -> dict:
        return bench.run_report(models, sentences, out, temperature=args.temperature, top_k=args.top_k, seed=seed,
                                quick=args.quick, wer=not args.no_wer, max_seconds=args.max_seconds, methods=methods)

    if seeds:
        quality = ("wer", "log_mel_l1_vs_plain") if not args.no_wer else ("log_mel_l1_vs_plain",)
        pooled = report.run_seeds(one_run, seeds, Path(args.out), quality)
        print(report.markdown_table(pooled, report.POOLED_COLUMNS + quality))
    else:
        print(bench.markdown_table(one_run(args.seed, Path(args.out))["rows"]))
    print(f"saved to {args.out}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("speech", help="speak text with speculative decoding over codec tokens")
    parser.add_argument("text")
    add_method_arguments(parser, DRAFTERS, ACCEPTANCES, default_drafter="draft", default_acceptance="topk")
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("-o", "--output", default="runs/speech/sample.wav")
    parser.add_argument("--compare-plain", action=argparse.BooleanOptionalAction, default=True)
    _common(parser)
    parser.set_defaults(run=run_speech)


def register_bench(subparsers) -> None:
    parser = subparsers.add_parser("speech", help="speed against quality of speech decoding methods")
    parser.add_argument("--sentences", help=".jsonl with a text field, or .txt (default: bundled held-out)")
    parser.add_argument("--num-sentences", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="plain, draft and one tolerant method only")
    parser.add_argument("--no-wer", action="store_true", help="skip pocketsphinx transcription")
    parser.add_argument("--jacobi", action="store_true", help="plain, draft and the Jacobi (SJD) methods")
    parser.add_argument("--methods", help="comma-separated method names from the default list "
                        "(e.g. 'plain,draft,draft+topk k=4'); plain always runs first")
    parser.add_argument("--max-seconds", type=float, default=5.0, help="longest utterance generated")
    report.add_seeds_argument(parser)
    parser.add_argument("--out", default="runs/bench/speech")
    _common(parser)
    parser.set_defaults(run=run_bench)
