"""Text in, text out: prompts through the tokenizer (and chat template), the core loop, streamed text out."""
from __future__ import annotations

import dataclasses
from typing import Iterator

import torch

import multispec
from multispec.acceptance import TypicalAcceptance
from multispec.drafters import DraftModel, Jacobi, LayerSkip, PromptLookup
from multispec import timing
from multispec.lm import output_vocab_size
from multispec.feature_drafters import Eagle, Medusa
from multispec.cross_vocab import CrossVocabularyDraft
from multispec.methods import (CrossVocabConfig, DraftModelConfig, DraftTreeConfig, EagleConfig, ExactConfig,
                               JacobiConfig, LayerSkipConfig, MedusaConfig, Method, PromptLookupConfig, TypicalConfig,
                               require_supported)
from multispec.tree_drafters import DraftTree

DRAFTERS = (DraftModelConfig, DraftTreeConfig, CrossVocabConfig, PromptLookupConfig, LayerSkipConfig, JacobiConfig,
            EagleConfig, MedusaConfig)
ACCEPTANCES = (ExactConfig, TypicalConfig)


def make_drafter(config, target, draft=None, head=None, bridge=None):
    """The drafter a method config asks for (None: plain decoding); ``draft`` is the separate draft
    model of :class:`DraftModelConfig` (and of :class:`CrossVocabConfig`, with ``bridge``, a
    :class:`~modalities.text.vocabulary.TokenizerBridge`), ``head`` the trained head of :class:`EagleConfig`
    (``models.feature_heads.load_head``) or of :class:`MedusaConfig` (``load_medusa``); layer skip
    keeps a quarter of the target's layers by default."""
    if config is None:
        return None
    require_supported(config, DRAFTERS, "the text adapter")
    settings = dataclasses.asdict(config)
    if settings.pop("size_by_timing", False):  # trees sized by what verification costs here, measured now
        settings["cost"] = timing.verify_costs(target)
    if isinstance(config, (DraftModelConfig, DraftTreeConfig)):
        if draft is None:
            raise ValueError(f"drafter {config.name!r} needs a draft model (--draft PATH)")
        return (DraftModel if isinstance(config, DraftModelConfig) else DraftTree)(draft, **settings)
    if isinstance(config, CrossVocabConfig):
        if draft is None or bridge is None:
            raise ValueError("drafter 'cross-vocab' needs a draft model with its own tokenizer (--draft PATH)")
        mode = settings.pop("vocab_mode")
        return CrossVocabularyDraft(draft, bridge, mode=mode, **settings)
    if isinstance(config, EagleConfig):
        if head is None:
            raise ValueError("drafter 'eagle' needs a trained feature head (--eagle PATH or a registry name)")
        return Eagle(head, **settings)
    if isinstance(config, MedusaConfig):
        if head is None or not hasattr(head, "predict"):
            raise ValueError("drafter 'medusa' needs trained Medusa heads (--medusa PATH; "
                             "python -m models.recipes.feature medusa trains them)")
        return Medusa(head, **settings)
    if isinstance(config, PromptLookupConfig):
        settings["max_ngram"] = config.max_ngram or 3
        return PromptLookup(**settings)
    if isinstance(config, LayerSkipConfig):
        settings["num_layers"] = config.num_layers or max(1, target.config.num_hidden_layers // 4)
        return LayerSkip(target, **settings)
    return Jacobi(output_vocab_size(target), window=config.window)


def make_acceptance(config):
    """None for exact (the core picks greedy equality or speculative sampling); else Medusa's typical rule."""
    require_supported(config, ACCEPTANCES, "the text adapter")
    return None if isinstance(config, ExactConfig) else TypicalAcceptance(epsilon=config.epsilon, delta=config.delta)


def encode_prompt(prompt: str, tokenizer, chat: bool | None = None) -> torch.Tensor:
    """Prompt text -> input ids [1, T]; uses the chat template when the tokenizer has one (chat=None)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True but the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("prompt encodes to no tokens")
    return ids


class TextStream:
    """Iterate for text pieces as the tokens are accepted; ``stats`` holds the run's DecodingStats."""

    def __init__(self, steps, tokenizer):
        self._steps, self._tokenizer = steps, tokenizer
        self.stats = None
        self.token_ids: list[int] = []

    def __iter__(self) -> Iterator[str]:
        shown = ""
        for step in self._steps:
            self.stats = step.stats
            self.token_ids.extend(step.tokens.tolist())
            text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next bytes
                continue
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):]


def stream_text(prompt: str, target, tokenizer, drafter=None, *, method: Method | None = None, draft=None,
                head=None, bridge=None, chat: bool | None = None, stop_at_eos: bool = True,
                **generate_kwargs) -> TextStream:
    """Stream the continuation of ``prompt``; keyword arguments go to :func:`multispec.stream`.

    Either pass a ``drafter`` object (any :class:`multispec.Drafter`) or a ``method`` config (its
    drafter built with ``draft`` as the draft model or ``head`` as the eagle or Medusa head, and its
    acceptance rule). ``stop_at_eos``
    passes the tokenizer's eos id (the core itself never reads one from a config).
    """
    if method is not None:
        if drafter is not None or "acceptance" in generate_kwargs:
            raise ValueError("pass a method, or a drafter and acceptance, not both")
        drafter = make_drafter(method.drafter, target, draft, head, bridge)
        generate_kwargs["acceptance"] = make_acceptance(method.acceptance)
    input_ids = encode_prompt(prompt, tokenizer, chat).to(next(target.parameters()).device)
    if stop_at_eos and tokenizer.eos_token_id is not None:
        generate_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    return TextStream(multispec.stream(target, input_ids, drafter=drafter, **generate_kwargs), tokenizer)


def generate_text(prompt: str, target, tokenizer, drafter=None, **kwargs):
    """(text, stats): the whole continuation of ``prompt`` (see :func:`stream_text`)."""
    stream = stream_text(prompt, target, tokenizer, drafter, **kwargs)
    text = "".join(stream)
    return text, stream.stats
