"""The speech model's vocabulary: specials, characters of the input text, then the codec's codes.

Ids: pad 0, bos 1, sep 2, eos 3; characters from 4; codec tokens from ``CODE_OFFSET`` in the
layout's slot order (codebook k's code c = CODE_OFFSET + k·C + c; the delay layout's empty token
after them). A sequence is [bos] text [sep] audio tokens [eos].
"""
from __future__ import annotations

import re

import torch

PAD, BOS, SEP, EOS = 0, 1, 2, 3
CHARS = " abcdefghijklmnopqrstuvwxyz'.,?!;-"
CHAR_OFFSET = 4
CODE_OFFSET = 64  # room for the characters and future symbols


def normalise_text(text: str) -> str:
    """Lowercase, straight quotes, single spaces."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " - ").replace("--", " - ")
    return " ".join(text.lower().split())


def encode_text(text: str) -> torch.Tensor:
    """Text -> prompt [1, n + 2] = [bos] chars [sep]; empty or unsupported text raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    norm = normalise_text(text)
    if not re.search(r"[a-z]", norm):
        raise ValueError("text is empty: give at least one word to speak")
    bad = sorted(set(ch for ch in norm if ch not in CHARS))
    if bad:
        hint = " (spell numbers out as words)" if any(ch.isdigit() for ch in bad) else ""
        raise ValueError(f"text contains characters the speech model cannot read: {''.join(bad)!r}{hint}; "
                         f"supported: letters and {CHARS[27:]!r}")
    ids = [BOS] + [CHAR_OFFSET + CHARS.index(ch) for ch in norm] + [SEP]
    return torch.tensor([ids])
