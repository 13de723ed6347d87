"""Drafters that propose token trees (see :mod:`multispec.trees`); the loop verifies a tree in one
target forward with the exact rules (greedy: the longest path the target agrees with; sampling:
point-mass siblings tried in turn, lossless) and keeps the accepted path.

:class:`DraftTree` grows a dynamic tree from a small draft model, EAGLE-2 style: at each depth the
``width`` nodes with the highest cumulative draft log-probability are expanded by their ``branches``
most likely children (one draft forward per depth scores the whole depth), and the ``max_nodes``
best nodes of the whole tree are proposed, as point masses (the children are the draft's top-k, not
samples). Knows nothing about modalities.
"""
from __future__ import annotations

import torch

from .drafters import Draft, DraftModel, _empty
from .lm import TreeVerifier


class DraftTree(DraftModel):
    """A draft model proposing a dynamic token tree of depth γ (the adaptive draft length)."""

    def __init__(self, model, branches: int = 2, width: int = 3, max_nodes: int = 12, num_draft_tokens: int = 4,
                 adaptive: bool = True, max_draft_tokens: int = 8):
        super().__init__(model, num_draft_tokens, adaptive, max_draft_tokens)
        for name, value in (("branches", branches), ("width", width), ("max_nodes", max_nodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DraftTree: {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.lm, TreeVerifier):
            raise ValueError(f"DraftTree needs a draft model that is a multispec.lm.TreeVerifier; "
                             f"{type(self.lm).__name__} is not one")
        self.branches, self.width, self.max_nodes = branches, width, max_nodes

    def propose(self, tokens, max_tokens, sampling, generator) -> Draft:
        depth = min(self.length.current, max_tokens)
        if depth <= 0:
            return _empty(tokens.device)
        tokens = tokens.to(self._cached.device)
        logits = self._sync(tokens)  # the draft cache now holds every token
        prefix = tokens.shape[0]
        node_tokens: list[int] = []
        parents: list[int] = []
        scores: list[float] = []  # cumulative draft log-probability of each node's path
        frontier, frontier_logits = [-1], logits[None]  # nodes to expand and their next-token logits
        for level in range(depth):
            logp = torch.log_softmax(frontier_logits.float(), dim=-1)  # [f, V]
            top = logp.topk(min(self.branches, logp.shape[-1]), dim=-1)
            start = len(node_tokens)
            for row, parent in enumerate(frontier):
                base = 0.0 if parent < 0 else scores[parent]
                for value, token in zip(top.values[row].tolist(), top.indices[row].tolist()):
                    node_tokens.append(token)
                    parents.append(parent)
                    scores.append(base + value)
            if level == depth - 1:
                break
            new = list(range(start, len(node_tokens)))
            fed = self.lm.forward_tree(torch.tensor(node_tokens[start:], device=tokens.device),
                                       torch.tensor(parents, device=tokens.device), tree_start=prefix)
            best = sorted(new, key=lambda i: -scores[i])[: self.width]
            frontier, frontier_logits = best, fed[[i - start for i in best]]
        self.lm.rollback(prefix)
        self._cached = tokens
        keep = sorted(sorted(range(len(node_tokens)), key=lambda i: -scores[i])[: self.max_nodes])
        index = {old: new for new, old in enumerate(keep)}  # a node's ancestors score higher: kept too
        return Draft(torch.tensor([node_tokens[i] for i in keep], device=tokens.device),
                     parents=torch.tensor([index[parents[i]] if parents[i] >= 0 else -1 for i in keep],
                                          dtype=torch.long, device=tokens.device))
