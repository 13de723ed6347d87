"""Speech demo: held-out sentences spoken by the bundled codec-token model, every method, one table.

Plain AR, exact speculative decoding (draft model, Jacobi) and tolerant acceptance (top-k,
additive β per codebook level, codec-codebook neighbourhoods) speak the same sentences with the
same seed. Prints method × (wall-clock speedup, τ, acceptance, TV mass moved, pocketsphinx WER,
log-mel distance to plain decoding) and writes example WAVs (``wav/``), ``sweep.png`` and
``results.md``/``results.json``. The codec is a mel-spectrogram codec with a Griffin-Lim decoder.

    python demos/speech_generation.py [--num-sentences 32] [--quick] [--out runs/demo/speech]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from modalities.speech import bench
from modalities.speech.cli import default_sentences
from modalities.speech.generation import SpeechModels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-sentences", type=int, default=8, help="the benchmark's gate run uses 32")
    ap.add_argument("--quick", action="store_true", help="plain, draft and one tolerant method only")
    ap.add_argument("--temperature", type=float, help="default: the model's (0.7 for the bundled one)")
    ap.add_argument("--out", type=Path, default=Path("runs/demo/speech"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        models = SpeechModels.from_zoo()
    except FileNotFoundError as error:
        print(f"speech demo skipped: {error}", file=sys.stderr)
        return 1
    sentences = default_sentences(args.num_sentences)
    print(f"{len(sentences)} held-out sentences, e.g. {sentences[0]!r}", flush=True)
    report = bench.run_report(models, sentences, args.out, temperature=args.temperature, quick=args.quick)
    print(bench.markdown_table(report["rows"]))
    print(f"wrote {args.out}/wav/*.wav, sweep.png, results.md ({report['settings']['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
