"""Drafters that propose token trees (see :mod:`multispec.trees`); the loop verifies a tree in one
target forward (greedy: the longest path the target agrees with; sampling: siblings tried in turn,
lossless) and keeps the accepted path.

:class:`DraftTree` grows a dynamic tree from a small draft model, EAGLE-2 style: at each depth the
``width`` nodes with the highest cumulative draft log-probability are expanded by their ``branches``
most likely children (one draft forward per depth feeds those ``width`` nodes), and the ``max_nodes``
best nodes of the whole tree are proposed, as point masses (the children are the draft's top-k, not
samples). With ``sample_children`` and a sampling temperature, each expanded node's ``branches``
children are instead drawn from the draft distribution q (with replacement) and proposed with their q
rows, verified by multi-round speculative sampling (:func:`multispec.trees.sample_path`); every drawn
node is kept, since pruning by score would bias the draws. Knows nothing about modalities.
"""
from __future__ import annotations

import torch

from . import trees
from .drafters import Draft, DraftModel, _empty, tree_draft
from .lm import TreeVerifier


class DraftTree(DraftModel):
    """A draft model proposing a dynamic token tree of depth γ (the adaptive draft length)."""

    def __init__(self, model, branches: int = 2, width: int = 3, max_nodes: int = 12, num_draft_tokens: int = 4,
                 adaptive: bool = True, max_draft_tokens: int = 8, cost: torch.Tensor | None = None,
                 sample_children: bool = False):
        super().__init__(model, num_draft_tokens, adaptive, max_draft_tokens)
        for name, value in (("branches", branches), ("width", width), ("max_nodes", max_nodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DraftTree: {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.lm, TreeVerifier):
            raise ValueError(f"DraftTree needs a draft model that is a multispec.lm.TreeVerifier; "
                             f"{type(self.lm).__name__} is not one")
        self.branches, self.width, self.max_nodes = branches, width, max_nodes
        self.cost = cost  # [K] relative verification cost per fed tokens: trees sized by trees.size_by_cost
        # under sampling: children drawn from q (verified with their q rows), every drawn node kept
        self.sample_children = bool(sample_children)

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        depth = min(self.length.current, max_tokens)
        if depth <= 0:
            return _empty(tokens.device)
        tokens = tokens.to(self._cached.device)
        logits = self._sync(tokens)  # the draft cache now holds every token
        prefix = tokens.shape[0]
        fed_of: dict[int, int] = {}  # tree node -> its place among the nodes fed to the draft
        fed_parents: list[int] = []

        def expand(frontier, node_tokens, parents):
            for node in frontier:
                fed_of[node] = len(fed_parents)
                fed_parents.append(fed_of.get(parents[node], -1))
            return self.lm.forward_tree(torch.tensor([node_tokens[n] for n in frontier], device=tokens.device),
                                        torch.tensor(fed_parents, device=tokens.device), tree_start=prefix)

        sampled = self.sample_children and not sampling.greedy  # pruning by score would bias the draws: keep all
        rows: list[torch.Tensor] | None = [] if sampled else None

        def pick(frontier_logits):  # ``branches`` independent draws from q for each expanded node
            return torch.multinomial(sampling.probs(frontier_logits), self.branches, replacement=True,
                                     generator=generator)

        node_tokens, parents = trees.grow(logits, depth, self.branches, self.width,
                                          1 << 30 if sampled else self.max_nodes, expand,
                                          None if sampled else self.cost, pick if sampled else None, rows)
        self.lm.rollback(prefix)
        self._cached = tokens
        draft = tree_draft(node_tokens, parents, tokens.device)
        if sampled and node_tokens:
            draft.probs = sampling.probs(torch.stack(rows))  # [n, V] the q each node was drawn from
        return draft
