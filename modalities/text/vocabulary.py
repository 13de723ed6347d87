"""Two tokenizers as a :class:`multispec.cross_vocab.VocabularyBridge` (drafting across vocabularies).

A draft token's twin is the target token whose text is byte-for-byte the same. Each token's text is
read by decoding it after a fixed anchor token (so SentencePiece's leading "▁" and byte-level BPE's
"Ġ" both read as a space) and stripping the anchor's text; tokens that decode to partial UTF-8
(U+FFFD) and special tokens have no twin. Sequences cross over as text: the target's ids are decoded
and re-encoded by the draft tokenizer; draft tokens are re-encoded by the target tokenizer after a
look-behind window of the sequence's last tokens, so a token boundary inside the window is kept.
Knows nothing about models or decoding.
"""
from __future__ import annotations

import torch

_REPLACEMENT = "\ufffd"


def token_texts(tokenizer, size: int | None = None) -> list[str | None]:
    """The text of every token id below ``size`` (default: the tokenizer's length) as it reads inside
    a sequence; None for special tokens and partial UTF-8."""
    size = len(tokenizer) if size is None else size
    anchor = tokenizer.encode("a", add_special_tokens=False)[:1]
    prefix = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
    texts = tokenizer.batch_decode([anchor + [i] for i in range(size)], clean_up_tokenization_spaces=False)
    special = set(tokenizer.all_special_ids)
    out = []
    for i, text in enumerate(texts):
        ok = i not in special and text.startswith(prefix) and _REPLACEMENT not in text and len(text) > len(prefix)
        out.append(text[len(prefix):] if ok else None)
    return out


class TokenizerBridge:
    """Target and draft tokenizers -> ``to_draft``, ``to_target`` and ``draft_to_target`` [Vd].

    ``target_vocab_size`` / ``draft_vocab_size``: the models' logit widths (default: the tokenizers'
    lengths). ``draft_bos``: start the draft's sequence with its tokenizer's special tokens (its BOS).
    """

    def __init__(self, target_tokenizer, draft_tokenizer, target_vocab_size: int | None = None,
                 draft_vocab_size: int | None = None, lookbehind: int = 8, draft_bos: bool = False):
        if lookbehind < 1:
            raise ValueError(f"lookbehind must be >= 1, got {lookbehind}")
        self.target_tokenizer, self.draft_tokenizer = target_tokenizer, draft_tokenizer
        self.target_vocab_size = int(target_vocab_size or len(target_tokenizer))
        draft_size = int(draft_vocab_size or len(draft_tokenizer))
        self.lookbehind, self.draft_bos = lookbehind, draft_bos
        target_ids: dict[str, int] = {}
        for i, text in enumerate(token_texts(target_tokenizer, min(len(target_tokenizer), self.target_vocab_size))):
            if text is not None:
                target_ids.setdefault(text, i)
        draft_texts = token_texts(draft_tokenizer, min(len(draft_tokenizer), draft_size))
        d2t = torch.full((draft_size,), -1, dtype=torch.long)
        for i, text in enumerate(draft_texts):
            if text is not None and text in target_ids:
                d2t[i] = target_ids[text]
        self.draft_to_target = d2t
        self._anchor = target_tokenizer.encode("\n", add_special_tokens=False)[-1:]

    @property
    def shared(self) -> int:
        """How many draft tokens have a target twin."""
        return int((self.draft_to_target >= 0).sum())

    def to_draft(self, target_ids: torch.Tensor) -> torch.Tensor:
        text = self.target_tokenizer.decode(target_ids.tolist(), skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
        ids = self.draft_tokenizer.encode(text, add_special_tokens=self.draft_bos)
        return torch.tensor(ids, dtype=torch.long)

    def to_target(self, target_ids: torch.Tensor, drafted: torch.Tensor) -> torch.Tensor:
        """The draft's text as target tokens after ``target_ids``: re-encode (window + draft text) and keep
        what follows the window, for the longest window whose tokens come back unchanged."""
        text = self.draft_tokenizer.decode(drafted.tolist(), skip_special_tokens=True,
                                           clean_up_tokenization_spaces=False)
        text = text.rstrip(_REPLACEMENT)
        if not text:
            return torch.zeros(0, dtype=torch.long)
        ids = target_ids.tolist()
        for width in range(min(self.lookbehind, len(ids)), 0, -1):
            window = self._anchor + ids[-width:]  # the anchor keeps a leading space a leading space
            window_text = self.target_tokenizer.decode(window, clean_up_tokenization_spaces=False)
            encoded = self.target_tokenizer.encode(window_text + text, add_special_tokens=False)
            if encoded[: len(window)] == window:
                return torch.tensor(encoded[len(window):], dtype=torch.long)
        return torch.zeros(0, dtype=torch.long)
