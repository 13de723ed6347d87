"""Intelligibility of speech audio as a word error rate: offline recognition with pocketsphinx's
bundled US-English model, text normalisation, and word-level edit distance. pocketsphinx is
imported only when ``transcribe`` is first called."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import torch

SAMPLE_RATE = 16000
_PUNCT = re.compile(r"[^a-z0-9' ]+")


def normalize_text(text: str) -> str:
    """Lowercase, hyphens to spaces, strip punctuation except apostrophes inside words, collapse
    whitespace. Numbers are left as they come (pocketsphinx spells them out, so write "two" in
    references rather than "2")."""
    text = _PUNCT.sub(" ", text.lower().replace("-", " "))
    return " ".join(w.strip("'") for w in text.split() if w.strip("'"))


@functools.lru_cache(maxsize=1)
def _decoder():
    try:
        from pocketsphinx import Decoder
    except ImportError as e:
        raise ImportError("transcribe() needs pocketsphinx: pip install pocketsphinx") from e
    return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def transcribe(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> str:
    """wave [n] float in [-1, 1] at ``sample_rate`` (resampled to the recogniser's 16 kHz) ->
    normalised transcript ('' if nothing recognised). The decoder is created once per process
    (not thread-safe)."""
    wave = torch.as_tensor(wave)
    if wave.dim() != 1 or not wave.is_floating_point():
        raise ValueError(f"expected a float mono waveform [n], got shape {tuple(wave.shape)}, {wave.dtype}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        import torchaudio
        wave = torchaudio.functional.resample(wave.float(), sample_rate, SAMPLE_RATE)
    pcm = (wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes()
    dec = _decoder()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return normalize_text(hyp.hypstr) if hyp is not None else ""


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edit distance / reference word count, after ``normalize_text`` on both sides. An
    empty reference gives 0.0 for an empty hypothesis and 1.0 otherwise."""
    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus-level WER over (reference, hypothesis) pairs: total edits / total reference words
    (not the mean of per-utterance rates, so long utterances weigh more)."""
    edits = words = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
        edits += edit_distance(ref, hyp)
        words += len(ref)
    return edits / words if words else 0.0
