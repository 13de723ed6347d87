"""The speech model's vocabulary: specials, the input text (characters or phones), phone-index
tokens, then the codec's codes.

Ids: pad 0, bos 1, sep 2, eos 3. Text comes as characters (ids from ``CHAR_OFFSET``) or as phones
from flite's front end (ids from ``PHONE_OFFSET``, each preceded by its index token
``INDEX_OFFSET + i``, so a frame can name the phone it belongs to). Codec tokens start at the
model's ``code_offset`` (``CODE_OFFSET`` for character models, ``PHONE_CODE_OFFSET`` for phone
models) in the layout's slot order. A sequence is [bos] text [sep] audio tokens [eos].
"""
from __future__ import annotations

from dataclasses import dataclass

import re
import shutil
import subprocess

import torch

from models.token_meta import TokenModelMeta

PAD, BOS, SEP, EOS = 0, 1, 2, 3
CHARS = " abcdefghijklmnopqrstuvwxyz'.,?!;-"
CHAR_OFFSET = 4
CODE_OFFSET = 64  # character models: room for the characters and future symbols
# flite's US English phone set (cmulex), pause first.
PHONES = ("pau aa ae ah ao aw ax axr ay b ch d dh eh el em en er ey f g hh ih ix iy jh k l m n nx ng "
          "ow oy p r s sh t th uh uw v w y z zh").split()
PHONE_OFFSET = 4
INDEX_OFFSET = 64
MAX_PHONES = 128
PHONE_CODE_OFFSET = INDEX_OFFSET + MAX_PHONES


def normalise_text(text: str) -> str:
    """Lowercase, straight quotes, single spaces."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " - ").replace("--", " - ")
    return " ".join(text.lower().split())


def _check_text(text) -> str:
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
    return norm


def encode_text(text: str) -> torch.Tensor:
    """Text -> prompt [1, n + 2] = [bos] chars [sep]; empty or unsupported text raises ValueError."""
    norm = _check_text(text)
    return torch.tensor([[BOS] + [CHAR_OFFSET + CHARS.index(ch) for ch in norm] + [SEP]])


def text_to_phones(text: str, voice: str = "slt") -> list[str]:
    """flite's phones for ``text`` (the front end the phone models were trained with)."""
    norm = _check_text(text)
    if shutil.which("flite") is None:
        raise FileNotFoundError("the phone front end needs flite: apt-get install -y flite")
    run = subprocess.run(["flite", "-voice", voice, "-ps", "-t", norm, "none"], check=True,
                         capture_output=True, text=True)
    return run.stdout.split()


def encode_phones(phones: list[str]) -> torch.Tensor:
    """Phones -> prompt [1, 2n + 2] = [bos] (index_i phone_i)... [sep]."""
    if not phones:
        raise ValueError("no phones to speak")
    if len(phones) > MAX_PHONES:
        raise ValueError(f"{len(phones)} phones: the phone models read at most {MAX_PHONES}; split the text")
    unknown = sorted(set(p for p in phones if p not in PHONES))
    if unknown:
        raise ValueError(f"unknown phones {unknown}; the phone set is flite's: {' '.join(PHONES)}")
    ids = [BOS]
    for i, p in enumerate(phones):
        ids += [INDEX_OFFSET + i, PHONE_OFFSET + PHONES.index(p)]
    return torch.tensor([ids + [SEP]])


def encode(text: str, text_units: str = "chars") -> torch.Tensor:
    """The prompt [1, n] of a model reading ``text_units`` ("chars" or "phones")."""
    if text_units == "chars":
        return encode_text(text)
    if text_units == "phones":
        return encode_phones(text_to_phones(text))
    raise ValueError(f"unknown text_units {text_units!r}; expected 'chars' or 'phones'")


@dataclass(frozen=True, kw_only=True)
class SpeechMeta(TokenModelMeta):
    """A speech token model's ``multispec.json``: the layout of codec frames in the token stream and
    the codec it was made with (K codebooks of ``codebook_size`` codes at ``frame_rate``)."""

    layout: str
    num_codebooks: int
    frame_rate: float
    sample_rate: int | None = None
    code_offset: int = CODE_OFFSET  # the first codec code's token id
    text_units: str = "chars"  # or "phones" (flite's front end)
    default_temperature: float = 0.0
