"""`multispec text` and `multispec bench text`: thin argparse layers over the text adapter."""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

from . import batch_bench, bench
from multispec.methods import CrossVocabConfig, DraftModelConfig, DraftTreeConfig, EagleConfig, MedusaConfig

from ..method_args import add_method_arguments, method_from_args
from .generation import ACCEPTANCES, DRAFTERS, stream_text
from .loading import load_pair


def default_paths():
    """(target, draft) folders of the bundled text models, or an error naming what to pass instead."""
    try:
        from models import zoo
        return zoo.path("text-target"), zoo.path("text-draft")
    except (ImportError, AttributeError, KeyError, FileNotFoundError) as error:
        raise ValueError("no bundled text models are installed yet: pass --target PATH (and --draft PATH); "
                         "`python -m models.recipes.tiny_random DIR` writes a tiny random pair") from error


def _resolve(args):
    """(target folder, draft folder or None): each flag a folder or a registry name
    (``smollm2-135m-instruct``, ``text-draft``, ...); no --target means the bundled pair."""
    from models import zoo
    draft = None if args.draft is None else zoo.resolve(args.draft)
    if args.target is None:
        target_path, draft_path = default_paths()
        return target_path, draft or draft_path
    return zoo.resolve(args.target), draft


def load_feature_head(args, target, required: bool = True):
    """The eagle head of ``--eagle``, else the registry's head for ``--target`` (None if it has none
    and not ``required``)."""
    from models import zoo
    from models.feature_heads import load_head
    name = args.eagle or zoo.FEATURE_HEADS.get(args.target or "text-target")
    if name is None:
        if required:
            raise ValueError(f"no bundled eagle head for {args.target}: train one (python -m models.recipes.feature "
                             f"eagle --target ...) and pass --eagle PATH")
        return None
    return load_head(zoo.resolve(name), target)


def load_medusa_heads(args, target, required: bool = True):
    """The Medusa heads of ``--medusa`` (None without the flag unless ``required``)."""
    from models import zoo
    from models.feature_heads import load_medusa
    if args.medusa is None:
        if required:
            raise ValueError("drafter 'medusa' needs trained Medusa heads: train them (python -m "
                             "models.recipes.feature medusa --target ...) and pass --medusa PATH")
        return None
    return load_medusa(zoo.resolve(args.medusa), target)


def run_text(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    target_path, draft_path = _resolve(args)
    method = method_from_args(args)
    need_draft = isinstance(method.drafter, (DraftModelConfig, DraftTreeConfig))
    target, draft, tokenizer = load_pair(target_path, draft_path if need_draft else None, args.device, _dtype(args),
                                         _draft_dtype(args))
    bridge = None
    if isinstance(method.drafter, CrossVocabConfig):  # a draft model with its own tokenizer
        from multispec.lm import output_vocab_size

        from .loading import load_model, load_tokenizer
        from .vocabulary import TokenizerBridge
        if draft_path is None:
            raise ValueError("--drafter cross-vocab needs --draft PATH (a model with its own tokenizer)")
        draft = load_model(draft_path, "draft", _draft_dtype(args), args.device)
        bridge = TokenizerBridge(tokenizer, load_tokenizer(draft_path, "draft tokenizer"), output_vocab_size(target),
                                 output_vocab_size(draft))
    generator = torch.Generator(device=target.device).manual_seed(args.seed) if args.seed is not None else None
    head = load_feature_head(args, target) if isinstance(method.drafter, EagleConfig) else \
        load_medusa_heads(args, target) if isinstance(method.drafter, MedusaConfig) else None
    stream = stream_text(args.prompt, target, tokenizer, method=method, draft=draft, head=head, bridge=bridge,
                         max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=generator,
                         chat=args.chat)
    sys.stdout.write(args.prompt)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    stats = stream.stats
    line = f"\n[{method.name}] {stats.summary()}"
    if args.compare_plain and method.drafter is not None:  # same prompt and settings, plain decoding, not shown
        if args.seed is not None:
            generator.manual_seed(args.seed)
        plain = stream_text(args.prompt, target, tokenizer, None, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            generator=generator, chat=args.chat)
        "".join(plain)
        plain_rate = plain.stats.new_tokens / plain.stats.wall_s
        line += f" | plain {plain_rate:.1f} tok/s, speedup {stats.tokens_per_second / plain_rate:.2f}x"
    print(line, file=sys.stderr)
    return 0


def _bench_inputs(args, per_category: int | None):
    """(target path, draft path, target, draft, tokenizer, (category, prompt) pairs) of a bench command."""
    if args.threads:
        torch.set_num_threads(args.threads)
    target_path, draft_path = _resolve(args)
    target, draft, tokenizer = load_pair(target_path, draft_path, args.device, _dtype(args), _draft_dtype(args))
    if args.prompts:
        prompts = bench.load_prompts(args.prompts, per_category)
    else:  # the bundled pair's own held-out prompts; Spec-Bench's questions for any other target
        prompts = default_prompts(per_category, spec_bench=args.target is not None and not _bundled(args.target))
    return target_path, draft_path, target, draft, tokenizer, prompts


def run_bench(args) -> int:
    target_path, draft_path, target, draft, tokenizer, prompts = _bench_inputs(args, args.num_prompts)
    started = time.time()
    head = load_feature_head(args, target, required=False)
    report = bench.run_bench(target, draft, tokenizer, prompts, methods=args.methods, head=head,
                             medusa=load_medusa_heads(args, target, required=False),
                             max_new_tokens=args.max_new_tokens, layerskip_layers=args.num_layers,
                             gamma=args.gamma, chat=args.chat)
    report.update(target=str(target_path), draft=str(draft_path), eagle=args.eagle, medusa=args.medusa,
                  wall_s=time.time() - started, device=str(target.device), dtype=str(target.dtype))
    print(bench.markdown_table(report))
    print(f"saved to {bench.save_report(report, args.out)}", file=sys.stderr)
    return 0


def default_prompts(limit: int | None = None, spec_bench: bool = False):
    """The bundled held-out prompts, or Spec-Bench's 480 questions (13 categories) with ``spec_bench``."""
    try:
        from models import zoo
        return bench.load_prompts(zoo.spec_bench_path() if spec_bench else zoo.text_prompts_path(), limit)
    except (ImportError, AttributeError, FileNotFoundError) as error:
        raise ValueError("no bundled prompt file yet: pass --prompts FILE") from error


def _bundled(name) -> bool:
    from models import zoo
    return str(name) in zoo.ENTRIES


DTYPES = ("float32", "bfloat16", "float16")  # --dtype and --draft-dtype


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="target: a save_pretrained folder or a model name, e.g. "
                        "smollm2-135m-instruct or gemma3-270m (default: bundled text-target)")
    parser.add_argument("--draft", help="draft model (folder or name) sharing the target's tokenizer")
    parser.add_argument("--eagle", help="trained feature head (folder or name) of the eagle drafter "
                        "(default: the target's bundled head, if any)")
    parser.add_argument("--medusa", help="trained Medusa heads (folder or name) of the medusa drafter "
                        "(python -m models.recipes.feature medusa)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", help="e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", choices=DTYPES, help="model dtype (default float32)")
    parser.add_argument("--draft-dtype", choices=DTYPES,
                        help="the draft model's dtype (default: --dtype); a bf16 draft for an fp32 target stays "
                        "exact, since the target verifies every token")


def _dtype(args):
    return getattr(torch, args.dtype) if args.dtype else None


def _draft_dtype(args):
    return getattr(torch, args.draft_dtype) if args.draft_dtype else _dtype(args)


def register(subparsers) -> None:
    text = subparsers.add_parser("text", help="generate text with speculative decoding")
    text.add_argument("prompt")
    _common(text)
    add_method_arguments(text, DRAFTERS, ACCEPTANCES, default_drafter="draft")
    text.add_argument("--temperature", type=float, default=0.0)
    text.add_argument("--top-k", type=int)
    text.add_argument("--top-p", type=float)
    text.add_argument("--seed", type=int)
    text.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                      help="use the tokenizer's chat template (default: when it has one)")
    text.add_argument("--compare-plain", action=argparse.BooleanOptionalAction, default=True,
                      help="also time plain decoding of the same prompt and report the speedup")
    text.set_defaults(run=run_text)


def register_bench(subparsers) -> None:
    parser = subparsers.add_parser("text", help="benchmark text methods against plain decoding and HF peers")
    _common(parser)
    parser.add_argument("--prompts", help=".jsonl ({prompt} or Spec-Bench {turns}) or .txt, one per line")
    parser.add_argument("--num-prompts", type=int, help="use the first N prompts of each category")
    parser.add_argument("--num-layers", type=int, help="layers the layerskip and hf-early-exit drafters keep "
                        "(default: a quarter)")
    parser.add_argument("--gamma", type=int, default=4, help="draft length of the draft-fixed method")
    parser.add_argument("--methods", nargs="+", choices=bench.ALL_METHODS, default=list(bench.ALL_METHODS))
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap prompts in the tokenizer's chat template (default: when it has one)")
    parser.add_argument("--out", default="runs/bench", help="folder for bench_text.json and bench_text.md")
    parser.set_defaults(run=run_bench)
    cross = subparsers.add_parser("cross-vocab", help="benchmark drafting across vocabularies (different "
                                  "tokenizers) against Hugging Face's universal assisted decoding")
    cross.add_argument("--target", default="gemma3-270m", help="target folder or name (default gemma3-270m)")
    cross.add_argument("--draft", default="smollm2-135m-instruct", help="draft folder or name with its own tokenizer")
    cross.add_argument("--prompts", help=".jsonl or .txt prompts (default: Spec-Bench's questions as plain text)")
    cross.add_argument("--num-prompts", type=int, default=2, help="the first N prompts of each category")
    cross.add_argument("--max-new-tokens", type=int, default=64)
    cross.add_argument("--gamma", type=int, default=4, help="initial draft length (adaptive)")
    cross.add_argument("--threads", type=int, help="torch CPU threads")
    cross.add_argument("--out", default="runs/bench-cross", help="folder for bench_text.json and bench_text.md")
    cross.set_defaults(run=run_cross_bench)
    batch = subparsers.add_parser("batch", help="throughput against batch size (plain, draft, lookup, eagle, "
                                  "each with and without the batch policy)")
    _common(batch)
    batch.add_argument("--prompts", help=".jsonl or .txt prompts (default as for bench text)")
    batch.add_argument("--num-prompts", type=int, default=16, help="how many prompts (default 16)")
    batch.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    batch.add_argument("--methods", nargs="+", choices=batch_bench.METHODS, default=list(batch_bench.DEFAULT_METHODS))
    batch.add_argument("--out", default="runs/bench-batch", help="folder for bench_batch.{json,md} and throughput.png")
    batch.set_defaults(run=run_batch_bench)


def run_batch_bench(args) -> int:
    target_path, draft_path, target, draft, tokenizer, prompts = _bench_inputs(args, None)
    prompts = [text for _, text in prompts]
    if not args.prompts and len(prompts) > args.num_prompts:  # spread over the categories
        prompts = prompts[:: len(prompts) // args.num_prompts]
    prompts = prompts[: args.num_prompts]
    started = time.time()
    report = batch_bench.run_batch_bench(target, draft, tokenizer, prompts, tuple(args.batch_sizes), args.methods,
                                         args.max_new_tokens, head=load_feature_head(args, target, required=False))
    report.update(target=str(target_path), draft=str(draft_path), wall_s=time.time() - started)
    print(batch_bench.markdown(report))
    title = f"{pathlib.Path(str(target_path)).name}: throughput against batch size"
    print(f"saved to {batch_bench.save(report, args.out, title)}", file=sys.stderr)
    return 0


def run_cross_bench(args) -> int:
    from models import zoo

    from .cross_bench import run_cross_bench as run
    from .loading import load_model, load_tokenizer
    if args.threads:
        torch.set_num_threads(args.threads)
    target_path, draft_path = zoo.resolve(args.target), zoo.resolve(args.draft)
    prompts = bench.load_prompts(args.prompts or zoo.spec_bench_path(), args.num_prompts)
    started = time.time()
    report = run(load_model(target_path, "target"), load_tokenizer(target_path), load_model(draft_path, "draft"),
                 load_tokenizer(draft_path), [text for _, text in prompts], args.max_new_tokens,
                 num_draft_tokens=args.gamma)
    report.update(target=str(target_path), draft=str(draft_path), wall_s=time.time() - started)
    print(bench.markdown_table(report))
    print(f"saved to {bench.save_report(report, args.out)}", file=sys.stderr)
    return 0
