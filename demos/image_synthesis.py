"""Image demo: class-conditional emoji synthesis on the bundled models, plain against the best methods.

On the 64×64 models (16×16 codes; ``--size 32`` for the 8×8-code pair), plain AR decoding, exact
speculative decoding with the bundled drafter (lossless) and the fastest relaxed rule that kept
quality in the benchmark (64×64: LANTERN++, budget δ = 0.4 of probability mass per token with the
ratio capped at λ = 20; 32×32: LANTERN δ = 0.2) generate the same classes with the same seeds. Prints method × (speedup over plain AR in this run, target
forwards per image, τ, acceptance, TV mass moved, class accuracy, feature-FD, NLL) and writes
``grid.png`` (rows: methods, columns: classes), ``sweep.png`` and ``results.md``/``results.json``.
Quality uses an in-domain classifier, not Inception. ``--all`` runs every method of the benchmark
(`multispec bench image`, many minutes).

    python demos/image_synthesis.py [--per-class 2] [--all] [--size 64|32] [--out runs/demo/image]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from modalities.image import bench
from modalities.image.generation import BUNDLED, DEFAULT_SIZE, ImageModels

# plain, best exact, best relaxed at quality (README tables), per image side
BEST = {64: ("plain", "draft", "draft+neighborhood δ=0.4 λ=20"), 32: ("plain", "draft", "draft+neighborhood δ=0.2")}


def run(out: Path, per_class: int = 2, guidance_scale: float = 3.0, every_method: bool = False,
        size: int = DEFAULT_SIZE) -> list[Path]:
    models = ImageModels.from_zoo(size=size)
    methods = bench.DEFAULT_METHODS if every_method else \
        tuple(spec for spec in bench.DEFAULT_METHODS if spec.name in BEST[size])
    print(f"image: {len(models.class_names)} classes × {per_class} images × {len(methods)} methods "
          f"({', '.join(spec.name for spec in methods)})", flush=True)
    report = bench.run_report(models, out, per_class, guidance_scale=guidance_scale, methods=methods)
    print(bench.markdown_table(report["rows"]), flush=True)
    return [out / "grid.png", out / "sweep.png", out / "results.md"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=2,
                    help="images per class and method (9 classes; the benchmark's gate run uses 16)")
    ap.add_argument("--all", action="store_true", help="every benchmark method, not just the best three")
    ap.add_argument("--guidance-scale", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, choices=sorted(BUNDLED), help="image side of the bundled models")
    ap.add_argument("--out", type=Path, default=Path("runs/demo/image"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        files = run(args.out, args.per_class, args.guidance_scale, args.all, args.size)
    except FileNotFoundError as error:
        print(f"image demo skipped: {error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(map(str, files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
