"""Speech demo: held-out sentences spoken by the bundled codec-token model, plain against the best methods.

Plain AR decoding, exact speculative decoding with the bundled drafter (the same distribution as
plain) and the best tolerant rule measured here (top-k per codebook level, k = 4 for the coarse
codes and 16 for the residual ones) speak the same sentences with the same seed. Prints method ×
(speedup over plain in this run, τ, acceptance, TV mass moved, pocketsphinx WER, log-mel distance
to plain decoding) and writes WAVs (``wav/``), ``spectrograms.png`` (the first sentence, plain against
each method, so a reader sees what the rule changed), ``sweep.png`` and ``results.md``/``results.json``.
The codec is a mel-spectrogram codec with a Griffin-Lim decoder. A few sentences say little about
WER (the benchmark, `multispec bench speech`, uses 64 and five seeds); ``--all`` runs its methods.

    python demos/speech_generation.py [--num-sentences 4] [--all] [--out runs/demo/speech]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from modalities.speech import bench
from modalities.speech.cli import default_sentences
from modalities.speech.generation import SpeechModels

BEST = "draft,draft+topk k=4/16"  # with plain: plain, best exact, best tolerant (README table)


def run(out: Path, num_sentences: int = 4, temperature: float | None = None, every_method: bool = False) -> list[Path]:
    models = SpeechModels.from_zoo()
    sentences = default_sentences(num_sentences)
    methods = bench.DEFAULT_METHODS if every_method else bench.select_methods(BEST)
    print(f"speech: {len(sentences)} held-out sentences × {len(methods)} methods "
          f"({', '.join(spec.name for spec in methods)}), e.g. {sentences[0]!r}", flush=True)
    report = bench.run_report(models, sentences, out, temperature=temperature, methods=methods)
    print(bench.markdown_table(report["rows"]), flush=True)
    return [out / "wav", out / "sweep.png", out / "spectrograms.png", out / "results.md"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-sentences", type=int, default=4, help="the benchmark's gate run uses 64")
    ap.add_argument("--all", action="store_true", help="every benchmark method, not just the best three")
    ap.add_argument("--temperature", type=float, help="default: the model's (0.7 for the bundled one)")
    ap.add_argument("--out", type=Path, default=Path("runs/demo/speech"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        files = run(args.out, args.num_sentences, args.temperature, args.all)
    except FileNotFoundError as error:
        print(f"speech demo skipped: {error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(map(str, files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
