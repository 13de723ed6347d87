"""A causal LM together with its KV cache: feed tokens, read logits, roll back to a length.

This is the only place that calls a Hugging Face model's forward during decoding. The cache is
position-indexed by construction: ``length`` tokens are cached, ``forward`` appends, ``rollback``
drops the newest positions. The accepted prefix is never re-run.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from . import compat


@runtime_checkable
class Verifier(Protocol):
    """Everything the decoding loop and :class:`~multispec.drafters.DraftModel` use of a model; any
    object with these members can be a target (or a drafter's model).

    Modalities wrap their models in their own verifier (e.g. :class:`~multispec.guidance.GuidedLM`
    with classifier-free guidance and token masks) and pass it as ``target``; plain Hugging Face
    causal LMs are wrapped in :class:`CachedLM` automatically.
    """

    vocab_size: int  # V, the width of the logits
    length: int  # tokens in the cache
    max_length: int | None  # the longest sequence the model takes (None: no limit); longer requests are refused

    @property
    def device(self) -> torch.device: ...  # where token tensors fed to forward must live

    def reset(self) -> None: ...  # empty the cache before a new sequence

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Append tokens [n] to the cache -> logits [n, V] (row i predicts the token after tokens[i]);
        [1, V] for the last row only when ``last_only``."""
        ...

    def rollback(self, length: int) -> None: ...  # keep the first ``length`` cached positions

    # (absolute position, the token before it) -> the only token the model allows there, or None;
    # the loop appends a forced token without drafting or verifying it. None: nothing is ever forced.
    forced_token: Callable[[int, int], int | None] | None


@runtime_checkable
class TreeVerifier(Verifier, Protocol):
    """A :class:`Verifier` that can also score token trees (:mod:`multispec.trees`) in one forward."""

    def forward_tree(self, tokens: torch.Tensor, parents: torch.Tensor, tree_start: int | None = None) -> torch.Tensor:
        """Append tokens [m], the last m nodes of a tree with parents [N] (−1: the shared prefix; the
        first N − m nodes are cached from ``tree_start``) -> logits [m, V]."""
        ...

    def keep(self, positions: torch.Tensor) -> None: ...  # keep cached positions [k] (ascending), drop the rest


@runtime_checkable
class FeatureVerifier(Verifier, Protocol):
    """A :class:`Verifier` that also reports its hidden states, for drafters that read the target's
    features (:mod:`multispec.feature_drafters`)."""

    # [n, F] after each forward: the hidden states ``capture`` asked for, concatenated, for the n fed rows
    features: torch.Tensor | None

    def capture(self, layers: tuple[int, ...] | None) -> None:
        """From now on keep ``features`` for these ``hidden_states`` indices (i < L: the input of
        layer i; L: the final normed output); None stops."""
        ...


VERIFIER_MEMBERS = ("vocab_size", "length", "max_length", "device", "reset", "forward", "rollback", "forced_token")


def as_verifier(model, role: str = "target") -> "Verifier":
    """A Hugging Face causal LM wrapped in :class:`CachedLM`; any other object must be a complete
    :class:`Verifier`, else a ValueError names the members it lacks."""
    if isinstance(model, torch.nn.Module):
        return CachedLM(model)
    missing = [name for name in VERIFIER_MEMBERS if not hasattr(model, name)]
    if missing:
        raise ValueError(f"{role} must be a transformers causal LM or a multispec.Verifier; "
                         f"{type(model).__name__} lacks {', '.join(missing)}")
    return model


def feature_layers_for(model: torch.nn.Module, layers) -> tuple[int, ...] | None:
    """``layers`` checked as hidden-state indices of ``model`` (0..L), as a tuple (None stays None)."""
    depth = _text_config(model).num_hidden_layers
    if layers is not None and (not layers or any(not 0 <= i <= depth for i in layers)):
        raise ValueError(f"feature layers must be hidden-state indices in [0, {depth}], got {layers}")
    return None if layers is None else tuple(layers)


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

    forced_token = None  # a plain LM forces nothing; masking verifiers (GuidedLM) define the method

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
        self.feature_layers: tuple[int, ...] | None = None
        self.features: torch.Tensor | None = None
        self.reset()

    def capture(self, layers: tuple[int, ...] | None) -> None:
        """Keep ``features`` [n, F] (these hidden-state indices, concatenated) after each forward."""
        self.feature_layers = feature_layers_for(self.model, layers)
        self.features = None

    def _call(self, input_ids: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """The model's forward -> logits; keeps the captured features of batch row 0."""
        if self.feature_layers is None:
            return self.model(input_ids=input_ids, **kwargs).logits
        out = self.model(input_ids=input_ids, output_hidden_states=True, **kwargs)
        self.features = torch.cat([out.hidden_states[i][0] for i in self.feature_layers], dim=-1)
        return out.logits

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
        logits = self._call(input_ids, kwargs)
        self.length += input_ids.shape[1]
        return logits[:, -1:] if last_only else logits

    def forward_tree(self, tokens: torch.Tensor, parents: torch.Tensor, tree_start: int | None = None) -> torch.Tensor:
        """Append tokens [m], the last m nodes of a tree with ``parents`` [N] (node i follows node
        parents[i], −1: the shared prefix), in one forward with a tree attention mask; return logits
        [m, V] (row i predicts what follows token i). The tree's first N − m nodes are the cached
        positions from ``tree_start`` (default: none, the whole cache is the shared prefix). The
        cache then holds the nodes in feed order; :meth:`keep` leaves the accepted path."""
        tree_start = self.length if tree_start is None else tree_start
        return self._run_tree(tokens[None], parents, tree_start)[0]

    def _run_tree(self, input_ids: torch.Tensor, parents: torch.Tensor, tree_start: int) -> torch.Tensor:
        """:meth:`forward_tree` for input ids [B, m] (rows sharing the tree) -> logits [B, m, V]."""
        if parents.shape[0] != self.length - tree_start + input_ids.shape[1]:
            raise ValueError(f"a tree of {parents.shape[0]} nodes does not match {self.length - tree_start} cached "
                             f"and {input_ids.shape[1]} new ones")
        dtype = next(self.model.parameters()).dtype
        mask, positions = compat.tree_attention(self.model, tree_start, parents, dtype, queries=input_ids.shape[1])
        kwargs = {self._cache_kwarg: self.cache, "use_cache": True, "attention_mask": mask,
                  "position_ids": positions.expand(input_ids.shape[0], -1)}
        logits = self._call(input_ids, kwargs)
        self.length += input_ids.shape[1]
        return logits

    def keep(self, positions: torch.Tensor) -> None:
        """Keep the cached positions ``positions`` [k] (ascending) and drop the rest."""
        if positions.ndim != 1 or (positions.numel() and int(positions[-1]) >= self.length):
            raise ValueError(f"cannot keep positions {positions.tolist()} of a {self.length}-token cache")
        compat.keep_cache_positions(self.cache, positions)
        self.length = positions.shape[0]

    def rollback(self, length: int) -> None:
        """Keep the first ``length`` cached positions (also trims sliding-window layers)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back a cache of {self.length} tokens to {length}")
        if self.length:  # an empty cache has no layers to crop yet
            compat.crop_cache(self.cache, self.length - length)
        self.length = length
