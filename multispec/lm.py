"""A causal LM together with its KV cache: feed tokens, read logits, roll back to a length.

This is the only place that calls a Hugging Face model's forward during decoding. The cache is
position-indexed by construction: ``length`` tokens are cached, ``forward`` appends, ``rollback``
drops the newest positions. The accepted prefix is never re-run.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from . import compat


@runtime_checkable
class Verifier(Protocol):
    """What the decoding loop needs from a target: any object with these members can be one.

    Modalities wrap their models in their own verifier (e.g. classifier-free guidance) and pass it
    as ``target``; plain Hugging Face causal LMs are wrapped in :class:`CachedLM` automatically.
    An optional ``max_length`` (int or None) is the longest sequence the model takes; the loop
    refuses requests past it.
    """

    vocab_size: int
    length: int

    def reset(self) -> None: ...

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # tokens [n] -> logits [n, V]
        ...

    def rollback(self, length: int) -> None: ...


def output_vocab_size(model: torch.nn.Module) -> int:
    """Width of the model's logits (the LM head's rows), falling back to the config."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(_text_config(model).vocab_size)


def _text_config(model: torch.nn.Module):
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def context_length(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's config allows (``max_position_embeddings`` or GPT-2's
    ``n_positions``), or None when the config names none."""
    config = _text_config(model)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class CachedLM:
    """A Hugging Face causal LM (``forward`` returns ``.logits``) with a rollback-able dynamic cache."""

    def __init__(self, model: torch.nn.Module):
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise ValueError(
                f"expected a transformers causal LM (PreTrainedModel), got {type(model).__name__}"
            )
        self.model = model
        self.vocab_size = output_vocab_size(model)
        self.max_length = context_length(model)
        self._cache_kwarg = compat.cache_kwarg(model)
        self._last_logits_only = compat.accepts_kwarg(model, "logits_to_keep")
        self.reset()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        self.cache = compat.new_cache(self.model)
        self.length = 0

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Append ``tokens`` [n] to the cache; return logits [n, V] (or [1, V] if ``last_only``)."""
        return self._run(tokens[None], last_only)[0]

    def _run(self, input_ids: torch.Tensor, last_only: bool) -> torch.Tensor:
        """One cached forward of ``input_ids`` [B, n] (rows share positions) -> logits [B, n or 1, V]."""
        kwargs = {self._cache_kwarg: self.cache, "use_cache": True}
        if last_only and self._last_logits_only:
            kwargs["logits_to_keep"] = 1
        logits = self.model(input_ids=input_ids, **kwargs).logits
        self.length += input_ids.shape[1]
        return logits[:, -1:] if last_only else logits

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached positions (also trims sliding-window layers)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back a cache of {self.length} tokens to {length}")
        if self.length:  # an empty cache has no layers to crop yet
            compat.crop_cache(self.cache, self.length - length)
        self.length = length
