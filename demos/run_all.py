"""`make demo`: the text, image and speech demos in one process, then where their files are.

Each demo runs plain decoding, the best exact method and the best relaxed method on the bundled
models and times them in the same run (about 3 minutes in all on a 2-core CPU).
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEMOS = (("text", "text_generation.py"), ("image", "image_synthesis.py"), ("speech", "speech_generation.py"))


def _load(file: str):
    spec = importlib.util.spec_from_file_location(file[:-3], HERE / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from transformers.utils import logging
    logging.disable_progress_bar()
    torch.set_num_threads(2)
    started, written, failed = time.time(), [], []
    for modality, file in DEMOS:
        t0 = time.time()
        print(f"\n===== {modality} =====", flush=True)
        try:
            written.append((modality, _load(file).run(Path("runs/demo") / modality), time.time() - t0))
        except FileNotFoundError as error:  # a missing bundled model or program: say which, go on
            print(f"{modality} demo skipped: {error}", file=sys.stderr, flush=True)
            failed.append(modality)
    print(f"\n===== done in {time.time() - started:.0f} s =====")
    for modality, files, seconds in written:
        print(f"{modality} ({seconds:.0f} s): {', '.join(map(str, files))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
