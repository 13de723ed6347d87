"""Image demo: class-conditional emoji synthesis on the bundled models, every method, one table.

Plain AR, exact speculative decoding with the drafter, Speculative Jacobi Decoding, and the relaxed
rules (LANTERN neighbourhoods of the VQ codebook at several δ, GSD groups) generate the same
classes with the same seeds. Prints method × (wall-clock speedup over plain AR, target forwards
per image, τ, acceptance, TV mass moved, class accuracy, feature-FD, NLL) and writes
``grid.png`` (rows: methods, columns: classes), ``sweep.png`` (speed against quality) and
``results.md``/``results.json``. Quality uses an in-domain classifier, not Inception.

    python demos/image_synthesis.py [--per-class 8] [--quick] [--out runs/demo/image]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from modalities.image import bench
from modalities.image.generation import ImageModels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=4,
                    help="images per class and method (9 classes; the benchmark's gate run uses 16)")
    ap.add_argument("--quick", action="store_true", help="plain, draft, sjd and one relaxed method only")
    ap.add_argument("--guidance-scale", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=Path("runs/demo/image"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        models = ImageModels.from_zoo()
    except FileNotFoundError as error:
        print(f"image demo skipped: {error}", file=sys.stderr)
        return 1
    print(f"classes: {', '.join(models.class_names)}; {args.per_class} images per class and method", flush=True)
    report = bench.run_report(models, args.out, args.per_class, guidance_scale=args.guidance_scale,
                              quick=args.quick)
    print(bench.markdown_table(report["rows"]))
    print(f"wrote {args.out}/grid.png, sweep.png, results.md ({report['settings']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
