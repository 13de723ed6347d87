"""Drafting across vocabularies: a draft model with its own tokenizer proposing the target's tokens.

A :class:`VocabularyBridge` translates between the two vocabularies (the text adapter builds one
from two tokenizers: ``modalities.text.vocabulary.TokenizerBridge``):
- ``to_draft(target_ids [T]) -> draft_ids [T']``: the same sequence in the draft's vocabulary;
- ``draft_to_target`` [Vd]: each draft token's twin in the target vocabulary (the same bytes), −1
  where it has none;
- ``to_target(target_ids [T], drafted [γ]) -> target ids [γ']``: draft tokens re-read as target tokens
  after the sequence (re-encoding their text over a look-behind window).

:class:`CrossVocabularyDraft` drafts in one of two modes, lossless under both exact rules:
- ``"shared"`` (the default): the draft's distribution restricted to the tokens both vocabularies
  share, moved onto the target's ids: q [γ, V] is a proper distribution in the target's vocabulary
  (sampled under the same temperature/top-k/top-p as the target), each drafted token is one target
  token, so speculative sampling judges it exactly;
- ``"text"``: the draft model drafts freely in its own vocabulary, and the text of its draft is
  re-encoded as target tokens (point-mass drafts: exact greedy and exact sampling, min(1, p(x))).

Knows nothing about tokenizers (the bridge does) or modalities.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .drafters import Draft, DraftModel, _empty

MODES = ("shared", "text")


@runtime_checkable
class VocabularyBridge(Protocol):
    target_vocab_size: int  # V
    draft_to_target: torch.Tensor  # [Vd] long: the target id of each draft token, −1 if none

    def to_draft(self, target_ids: torch.Tensor) -> torch.Tensor: ...  # [T] -> [T'] draft ids

    def to_target(self, target_ids: torch.Tensor, drafted: torch.Tensor) -> torch.Tensor: ...  # -> [γ'] target ids


class CrossVocabularyDraft(DraftModel):
    """A draft model whose vocabulary differs from the target's; see the module docstring."""

    def __init__(self, model, bridge: VocabularyBridge, mode: str = "shared", num_draft_tokens: int = 4,
                 adaptive: bool = True, max_draft_tokens: int = 16):
        missing = [m for m in ("target_vocab_size", "draft_to_target", "to_draft", "to_target") if not hasattr(bridge, m)]
        if missing:
            raise ValueError(f"bridge must be a multispec.cross_vocab.VocabularyBridge; {type(bridge).__name__} "
                             f"lacks {', '.join(missing)}")
        if mode not in MODES:
            raise ValueError(f"cross-vocabulary mode must be one of {MODES}, got {mode!r}")
        super().__init__(model, num_draft_tokens, adaptive, max_draft_tokens)
        d2t = bridge.draft_to_target
        if d2t.ndim != 1 or d2t.shape[0] > self.lm.vocab_size:
            raise ValueError(f"bridge.draft_to_target must be [Vd] with Vd <= the draft model's {self.lm.vocab_size} "
                             f"logits, got {tuple(d2t.shape)}")
        if mode == "shared" and not bool((d2t >= 0).any()):
            raise ValueError("the two vocabularies share no token: use mode='text'")
        self.bridge, self.mode = bridge, mode
        self.vocab_size = int(bridge.target_vocab_size)
        self._shared = (d2t >= 0).nonzero()[:, 0]  # [S] draft ids with a target twin
        self._shared_targets = d2t[self._shared]  # [S] their target ids
        self._to_draft = torch.full((self.vocab_size,), -1, dtype=torch.long)
        self._to_draft[self._shared_targets] = self._shared

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        gamma = min(self.length.current, max_tokens)
        if gamma <= 0:
            return _empty(tokens.device)
        context = self.bridge.to_draft(tokens.cpu()).to(self._cached.device)
        if context.shape[0] == 0:
            return _empty(tokens.device)
        logits = self._sync(context)
        drafted, picked, probs = [], [], []  # draft ids, target ids, q rows [1, V]
        for i in range(gamma):
            if self.mode == "shared":
                moved = logits.new_full((self.vocab_size,), float("-inf"))
                moved[self._shared_targets.to(logits.device)] = logits[self._shared.to(logits.device)]
                q = sampling.probs(moved[None])  # [1, V]
                target_token = sampling.pick(q, generator)  # [1]
                picked.append(target_token)
                probs.append(q)
                drafted.append(self._to_draft.to(target_token.device)[target_token])
            else:
                drafted.append(logits.argmax(dim=-1, keepdim=True))
            if i + 1 < gamma:
                logits = self.lm.forward(drafted[-1], last_only=True)[-1]
        draft_ids = torch.cat(drafted)
        self._cached = torch.cat([context, draft_ids[: gamma - 1]])
        if self.mode == "shared":
            return Draft(torch.cat(picked).to(tokens.device), torch.cat(probs))
        target_ids = self.bridge.to_target(tokens.cpu(), draft_ids.cpu())[:gamma]
        return Draft(target_ids.to(tokens.device)) if target_ids.numel() else _empty(tokens.device)
