"""`multispec image` and `multispec bench image`: thin argparse layers over the image adapter."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .. import report
from . import bench
from multispec.methods import Method

from ..method_args import add_method_arguments, method_from_args
from .generation import ACCEPTANCES, BUNDLED, DEFAULT_SIZE, DRAFTERS, ImageModels, generate_tokens


def load_models(args) -> ImageModels:
    if args.target is None:
        try:
            return ImageModels.from_zoo(size=args.size)
        except (KeyError, FileNotFoundError) as error:
            raise ValueError("no bundled image models are installed: pass --target, --vq (and --draft)") from error
    if args.vq is None:
        raise ValueError("--target needs --vq (the VQ tokenizer folder)")
    from models import zoo  # each flag: a folder or a registry name (e.g. image-draft)
    return ImageModels.from_folders(zoo.resolve(args.target), zoo.resolve(args.vq),
                                    None if args.draft is None else zoo.resolve(args.draft))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="image model folder or registry name (default: the bundled target of --size)")
    parser.add_argument("--draft", help="draft model folder (default: the bundled drafter of --size)")
    parser.add_argument("--vq", help="VQ tokenizer folder (default: bundled image-vq)")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, choices=sorted(BUNDLED),
                        help="image side of the bundled models (64: 16x16 tokens; 32: the first 8x8 pair)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance s")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run_image(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    models.class_id(args.class_name)  # unknown class: error before any work
    method = method_from_args(args)
    kwargs = dict(guidance_scale=args.guidance_scale, temperature=args.temperature, top_k=args.top_k)
    grids, stats = [], []
    for i in range(args.num_images):
        sample = generate_tokens(models, args.class_name, method,
                                 generator=torch.Generator().manual_seed(args.seed + i), **kwargs)
        grids.append(sample.tokens)
        stats.append(sample.stats)
    images = models.tokenizer.decode(torch.stack(grids))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    strip = Image.new("RGB", (images[0].width * len(images), images[0].height), "white")
    for i, image in enumerate(images):
        strip.paste(image, (i * image.width, 0))
    strip.resize((strip.width * args.scale, strip.height * args.scale), 0).save(out)
    wall = sum(s.wall_s for s in stats)
    line = (f"[{method.name}] {len(images)} image(s) of {args.class_name!r} -> {out}: "
            f"{sum(s.steps for s in stats) / len(stats):.1f} target forwards/image, "
            f"τ {sum(s.new_tokens for s in stats) / sum(s.steps for s in stats):.2f}, {wall:.2f} s")
    if args.compare_plain and method.drafter is not None:
        t0 = time.perf_counter()
        for i in range(args.num_images):
            generate_tokens(models, args.class_name, Method(),
                            generator=torch.Generator().manual_seed(args.seed + i), **kwargs)
        plain = time.perf_counter() - t0
        line += f" | plain {plain:.2f} s, speedup {plain / wall:.2f}x"
    print(line, file=sys.stderr)
    return 0


def run_bench(args) -> int:
    seeds = report.parse_seeds(args.seeds) if args.seeds else None
    if args.threads:
        torch.set_num_threads(args.threads)
    models = load_models(args)
    methods = bench.select_methods(args.methods) if args.methods else None

    def one_run(seed: int, out: Path) -> dict:
        return bench.run_report(models, out, per_class=args.per_class, guidance_scale=args.guidance_scale,
                                temperature=args.temperature, top_k=args.top_k, seed=seed, quick=args.quick,
                                methods=methods)

    if seeds:  # each seed draws the same number of images per class: mean accuracy = pooled accuracy
        quality = ("class_accuracy", "feature_fd")
        pooled = report.run_seeds(one_run, seeds, Path(args.out), quality)
        print(report.markdown_table(pooled, report.POOLED_COLUMNS + quality))
    else:
        print(bench.markdown_table(one_run(args.seed, Path(args.out))["rows"]))
    print(f"saved to {args.out}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("image", help="generate class-conditional images with speculative decoding")
    parser.add_argument("--class", dest="class_name", required=True, help="class name (e.g. 'Animals & Nature')")
    add_method_arguments(parser, DRAFTERS, ACCEPTANCES, default_drafter="draft", default_acceptance="neighborhood")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--scale", type=int, default=4, help="upscaling of the saved PNG")
    parser.add_argument("-o", "--output", default="runs/image/sample.png")
    parser.add_argument("--compare-plain", action=argparse.BooleanOptionalAction, default=True)
    _common(parser)
    parser.set_defaults(run=run_image)


def register_bench(subparsers) -> None:
    parser = subparsers.add_parser("image", help="speed against quality of image decoding methods")
    parser.add_argument("--per-class", type=int, default=8, help="images per class and method")
    parser.add_argument("--quick", action="store_true", help="plain, draft, jacobi and one relaxed method only")
    parser.add_argument("--methods", help="comma-separated method names, e.g. 'draft,draft+neighborhood d=0.2' "
                        "(plain is always run first)")
    report.add_seeds_argument(parser)
    parser.add_argument("--out", default="runs/bench/image")
    _common(parser)
    parser.set_defaults(run=run_bench)
