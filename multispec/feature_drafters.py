"""Drafters that read the target's own hidden states (EAGLE-style and Medusa feature drafters).

The loop hands such a drafter (:class:`FeatureDrafter`) the target's features of every position it
commits to the target's cache, in order (``observe_features``), after the prefill and after each
verification; the target must be a :class:`~multispec.lm.FeatureVerifier` capturing the drafter's
``feature_layers``. :class:`Eagle` drafts with a trained :class:`FeatureHead`: one decoder layer
whose input at position i is (target feature at i, token i + 1) for committed positions and (its
own output hidden state at i, drafted token i + 1) past them, so it runs ahead of the target on its
own features. It proposes a chain (adaptive γ) or, with ``branches`` > 1, a dynamic token tree
(:func:`multispec.trees.grow`), over its own reduced draft vocabulary mapped to target ids.
:class:`Medusa` drafts with K heads on the newest committed final hidden state alone (head k
predicts the k-th token after the newest one; no drafting forward depends on the drafted tokens):
a chain of the heads' picks, or a tree of their top candidates.
Knows nothing about modalities or how the heads were trained (see ``models.recipes.feature``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from . import compat, trees
from .drafters import Draft, Drafter, ScheduledDrafter, _empty, tree_draft


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


@runtime_checkable
class MedusaHeads(Protocol):
    """The trained heads of a :class:`Medusa` drafter (``models.feature_heads.MedusaHead`` is one)."""

    feature_layers: tuple[int, ...]  # (L,): the target's final normed hidden state
    vocab_size: int  # the target's vocabulary
    draft_to_target: torch.Tensor  # [Vd] the target id of each draft-vocabulary row
    num_heads: int  # K

    def predict(self, feature: torch.Tensor) -> torch.Tensor: ...  # [n, F] -> draft logits [K, n, Vd]


class _HeadDrafter(ScheduledDrafter):
    """What both feature drafters share: the checked head, the tree settings and the vocabulary map."""

    members: tuple[str, ...] = ()  # the head members the drafter uses
    protocol = ""  # the head protocol's name, for the error

    def __init__(self, head, num_draft_tokens: int, adaptive: bool, max_draft_tokens: int, branches: int,
                 width: int, max_nodes: int, cost: torch.Tensor | None = None):
        super().__init__(num_draft_tokens, adaptive, max_draft_tokens)
        name = type(self).__name__
        missing = [m for m in ("feature_layers", "vocab_size", "draft_to_target", *self.members)
                   if not hasattr(head, m)]
        if missing:
            raise ValueError(f"{name} needs a trained head (multispec.feature_drafters.{self.protocol}); "
                             f"{type(head).__name__} lacks {', '.join(missing)}")
        for setting, value in (("branches", branches), ("width", width), ("max_nodes", max_nodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {setting} must be an integer >= 1, got {value!r}")
        self.head = head
        self.feature_layers = tuple(head.feature_layers)
        self.vocab_size = int(head.vocab_size)
        self.branches, self.width, self.max_nodes = branches, width, max_nodes
        self.cost = cost  # [K] relative verification cost per fed tokens: trees sized by trees.size_by_cost
        d2t = head.draft_to_target
        self._identity_vocab = d2t.shape[0] == self.vocab_size and \
            bool((d2t == torch.arange(d2t.shape[0], device=d2t.device)).all())
        self.reset()

    def _full(self, logits: torch.Tensor) -> torch.Tensor:
        """Draft-vocabulary logits [m, Vd] -> target-vocabulary logits [m, V] (−inf off the draft vocabulary)."""
        if self._identity_vocab:
            return logits
        out = logits.new_full((logits.shape[0], self.vocab_size), float("-inf"))
        out[:, self.head.draft_to_target.to(logits.device)] = logits
        return out


class Eagle(_HeadDrafter):
    """A feature drafter: chain (``branches`` 1, adaptive γ) or dynamic tree of depth γ."""

    members, protocol = ("fuse", "new_cache", "step"), "FeatureHead"

    def __init__(self, head: FeatureHead, num_draft_tokens: int = 5, adaptive: bool = True,
                 max_draft_tokens: int = 8, branches: int = 1, width: int = 4, max_nodes: int = 16,
                 cost: torch.Tensor | None = None):
        super().__init__(head, num_draft_tokens, adaptive, max_draft_tokens, branches, width, max_nodes,
                         cost)

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
                                          self.max_nodes, expand, self.cost)
        return tree_draft(node_tokens, parents, device)


class Medusa(_HeadDrafter):
    """Medusa heads: γ = min(K, the length policy, max_tokens) tokens, head k's pick at depth k
    (``branches`` 1), or a tree of the heads' top-``branches`` candidates ranked by the product of
    their probabilities along the path (``branches`` > 1, at most ``max_nodes`` nodes)."""

    members, protocol = ("num_heads", "predict"), "MedusaHeads"

    def __init__(self, head: MedusaHeads, num_draft_tokens: int = 4, adaptive: bool = True,
                 max_draft_tokens: int = 5, branches: int = 1, width: int = 4, max_nodes: int = 16,
                 cost: torch.Tensor | None = None):
        super().__init__(head, num_draft_tokens, adaptive, max_draft_tokens, branches, width, max_nodes,
                         cost)

    def reset(self) -> None:
        super().reset()
        self._committed = 0  # positions whose target features arrived
        self._newest = None  # [F] the feature of the newest committed position

    def observe_features(self, features: torch.Tensor) -> None:
        if features.shape[0]:
            self._newest = features[-1]
            self._committed += features.shape[0]

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        depth = min(int(self.head.num_heads), self.length.current, max_tokens)
        if depth <= 0 or self._committed == 0 or self._committed != tokens.shape[0] - 1:
            return _empty(tokens.device)  # e.g. forced tokens not yet seen by the target
        logits = self.head.predict(self._newest[None])[:depth, 0]  # [depth, Vd]: head k -> the k-th token
        if self.branches > 1:
            return self._propose_tree(logits, tokens.device)
        q = sampling.probs(self._full(logits))  # [depth, V]
        return Draft(sampling.pick(q, generator).to(tokens.device), None if sampling.greedy else q)

    def _propose_tree(self, logits: torch.Tensor, device) -> Draft:
        """logits [depth, Vd]: the heads' draft logits -> a point-mass tree over target ids."""
        def expand(frontier, node_tokens, parents):  # every node at a depth gets the next head's logits
            node, level = frontier[0], 0
            while node >= 0:  # the frontier's depth: its children are head ``level``'s tokens
                node, level = parents[node], level + 1
            return logits[level].expand(len(frontier), -1)

        node_tokens, parents = trees.grow(logits[0], logits.shape[0], self.branches, self.width, self.max_nodes,
                                          expand, self.cost)
        d2t = self.head.draft_to_target
        return tree_draft(d2t[torch.tensor(node_tokens, dtype=torch.long, device=d2t.device)].tolist(), parents, device)


def _cache_length(cache) -> int:
    return int(cache.get_seq_length()) if len(getattr(cache, "layers", [])) else 0
