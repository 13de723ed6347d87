"""Drafters that read the target's own hidden states (EAGLE-style feature drafters).

The loop hands such a drafter (:class:`FeatureDrafter`) the target's features of every position it
commits to the target's cache, in order (``observe_features``), after the prefill and after each
verification; the target must be a :class:`~multispec.lm.FeatureVerifier` capturing the drafter's
``feature_layers``. :class:`Eagle` drafts with a trained :class:`FeatureHead`: one decoder layer
whose input at position i is (target feature at i, token i + 1) for committed positions and (its
own output hidden state at i, drafted token i + 1) past them, so it runs ahead of the target on its
own features. It proposes a chain (adaptive γ) or, with ``branches`` > 1, a dynamic token tree
(:func:`multispec.trees.grow`), over its own reduced draft vocabulary mapped to target ids.
Knows nothing about modalities or how the head was trained (see ``models.recipes.feature_drafters``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from . import compat, trees
from .drafters import Draft, Drafter, ScheduledDrafter, _empty


@runtime_checkable
class FeatureDrafter(Drafter, Protocol):
    """A :class:`~multispec.drafters.Drafter` that also reads the target's hidden states."""

    feature_layers: tuple[int, ...]  # the target hidden-state indices it reads (see FeatureVerifier.capture)

    def observe_features(self, features: torch.Tensor) -> None:
        """features [n, F]: the target's features of the n positions just committed to its cache."""
        ...


@runtime_checkable
class FeatureHead(Protocol):
    """The trained network of an :class:`Eagle` drafter (``models.feature_heads.EagleHead`` is one)."""

    feature_layers: tuple[int, ...]
    vocab_size: int  # the target's vocabulary
    draft_to_target: torch.Tensor  # [Vd] the target id of each draft-vocabulary row
    config: object  # the decoder layer's transformers config (sliding window, for tree masks)

    def fuse(self, features: torch.Tensor) -> torch.Tensor: ...  # [..., F] target features -> [..., H]

    def new_cache(self): ...

    def step(self, tokens: torch.Tensor, inputs: torch.Tensor, cache, position_ids: torch.Tensor,
             attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, n] (target ids) and inputs [B, n, H] (fused features or the head's own hidden
        states) appended to ``cache`` -> (draft logits [B, n, Vd], output hidden states [B, n, H])."""
        ...


class Eagle(ScheduledDrafter):
    """A feature drafter: chain (``branches`` 1, adaptive γ) or dynamic tree of depth γ."""

    def __init__(self, head: FeatureHead, num_draft_tokens: int = 5, adaptive: bool = True,
                 max_draft_tokens: int = 8, branches: int = 1, width: int = 4, max_nodes: int = 16):
        super().__init__(num_draft_tokens, adaptive, max_draft_tokens)
        missing = [m for m in ("feature_layers", "vocab_size", "draft_to_target", "fuse", "new_cache", "step")
                   if not hasattr(head, m)]
        if missing:
            raise ValueError(f"Eagle needs a feature head (multispec.feature_drafters.FeatureHead); "
                             f"{type(head).__name__} lacks {', '.join(missing)}")
        for name, value in (("branches", branches), ("width", width), ("max_nodes", max_nodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Eagle: {name} must be an integer >= 1, got {value!r}")
        self.head = head
        self.feature_layers = tuple(head.feature_layers)
        self.vocab_size = int(head.vocab_size)
        self.branches, self.width, self.max_nodes = branches, width, max_nodes
        d2t = head.draft_to_target
        self._identity_vocab = d2t.shape[0] == self.vocab_size and bool((d2t == torch.arange(d2t.shape[0])).all())
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._cache = self.head.new_cache()
        self._entries = 0  # committed positions entered into the head's cache
        self._committed = 0  # positions whose target features arrived
        self._pending: list[torch.Tensor] = []  # fused features [n, H] not yet entered
        self._last = None  # (draft logits [Vd], hidden [H]) of the newest entry

    def observe_features(self, features: torch.Tensor) -> None:
        if features.shape[0]:
            self._pending.append(self.head.fuse(features))
            self._committed += features.shape[0]

    def _full(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits [m, Vd] -> target-vocabulary logits [m, V] (−inf off the draft vocabulary)."""
        if self._identity_vocab:
            return logits
        out = logits.new_full((logits.shape[0], self.vocab_size), float("-inf"))
        out[:, self.head.draft_to_target.to(logits.device)] = logits
        return out

    def _enter_committed(self, tokens: torch.Tensor) -> None:
        """Enter positions [entries, committed) as (their target feature, the token after them)."""
        compat.crop_cache(self._cache, _cache_length(self._cache) - self._entries)
        if not self._pending:
            return
        inputs = torch.cat(self._pending)
        positions = torch.arange(self._entries, self._committed, device=inputs.device)[None]
        logits, hidden = self.head.step(tokens[self._entries + 1: self._committed + 1][None], inputs[None],
                                        self._cache, positions)
        self._last = (logits[0, -1], hidden[0, -1])
        self._entries, self._pending = self._committed, []

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        depth = min(self.length.current, max_tokens)
        if depth <= 0 or self._committed == 0 or self._committed != tokens.shape[0] - 1:
            return _empty(tokens.device)  # e.g. forced tokens not yet seen by the target
        self._enter_committed(tokens)
        if self.branches > 1:
            return self._propose_tree(tokens.device, depth)
        logits, hidden = self._last
        drafted, probs = [], []
        for k in range(depth):
            q = sampling.probs(self._full(logits[None]))  # [1, V]
            drafted.append(sampling.pick(q, generator))
            probs.append(q)
            if k == depth - 1:
                break
            position = torch.tensor([[self._entries + k]], device=hidden.device)
            out, h = self.head.step(drafted[-1][None], hidden[None, None], self._cache, position)
            logits, hidden = out[0, -1], h[0, -1]
        return Draft(torch.cat(drafted).to(tokens.device), None if sampling.greedy else torch.cat(probs))

    def _propose_tree(self, device, depth: int) -> Draft:
        root_logits, root_hidden = self._last
        fed_of: dict[int, int] = {}
        fed_parents: list[int] = []
        fed_hidden: list[torch.Tensor] = []

        def expand(frontier, node_tokens, parents):
            inputs = torch.stack([root_hidden if parents[n] < 0 else fed_hidden[fed_of[parents[n]]] for n in frontier])
            for node in frontier:
                fed_of[node] = len(fed_parents)
                fed_parents.append(fed_of.get(parents[node], -1))
            mask, positions = compat.tree_attention(self.head, self._entries, torch.tensor(fed_parents),
                                                    inputs.dtype, queries=len(frontier))
            ids = torch.tensor([node_tokens[n] for n in frontier], device=inputs.device)
            logits, hidden = self.head.step(ids[None], inputs[None], self._cache, positions.to(inputs.device),
                                            mask.to(inputs.device) if torch.is_tensor(mask) else mask)
            fed_hidden.extend(hidden[0])
            return self._full(logits[0])

        node_tokens, parents = trees.grow(self._full(root_logits[None])[0], depth, self.branches, self.width,
                                          self.max_nodes, expand)
        return Draft(torch.tensor(node_tokens, device=device),
                     parents=torch.tensor(parents, dtype=torch.long, device=device))


def _cache_length(cache) -> int:
    return int(cache.get_seq_length()) if len(getattr(cache, "layers", [])) else 0
