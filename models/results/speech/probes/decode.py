"""Re-decode frames saved by probe.py with other Griffin-Lim settings: python decode.py FRAMES.pt"""
import dataclasses
import sys

import torch

from modalities.speech import wer
from modalities.speech.generation import SpeechModels

torch.set_num_threads(1)
d = torch.load(sys.argv[1])
codec = SpeechModels.from_zoo(with_draft=False).codec
bundled = codec.config


def to_wave(log_mel, iters):
    """The codec's own mel_to_wave with ``iters`` Griffin-Lim iterations."""
    codec.config = dataclasses.replace(bundled, griffin_lim_iters=iters)
    return codec.mel_to_wave(log_mel)


def smooth(log_mel, weights):
    """log-mel [T, n_mels] filtered over time by ``weights`` (edges repeated)."""
    kernel = torch.tensor(weights)[None, None] / sum(weights)
    x = torch.nn.functional.pad(log_mel.T[:, None], (len(weights) // 2, len(weights) // 2), mode="replicate")
    return torch.nn.functional.conv1d(x, kernel)[:, 0].T


variants = {"gl32": lambda lm: to_wave(lm, 32), "gl100": lambda lm: to_wave(lm, 100),
            "sm121_gl32": lambda lm: to_wave(smooth(lm, [1., 2., 1.]), 32),
            "sm121_gl100": lambda lm: to_wave(smooth(lm, [1., 2., 1.]), 100)}
for name, fn in variants.items():
    pairs = [(s, wer.transcribe(fn(codec.dequantize(fr)), bundled.sample_rate) if fr.shape[0] else "")
             for s, fr in zip(d["sents"], d["frames"])]
    print(name, round(wer.corpus_wer(pairs), 4), flush=True)
