"""Token trees: a draft whose tokens hang off the newest token or off each other, scored by one
target forward. A node's ``parent`` is the index of the node it follows, −1 for the newest token
(the root); a chain is the tree whose parents are −1, 0, 1, ... Pure functions over index tensors:
the attention layout (who sees whom, at which position) and the two walks that decide which path is
accepted (greedy, and lossless sampling over point-mass siblings), and the relaxed walk that applies
an acceptance rule's tolerance at each node. Nothing here knows a model, a cache or a modality.
"""
from __future__ import annotations

import math

import torch


def chain_parents(n: int, device=None) -> torch.Tensor:
    """[n] the parents of a chain: −1, 0, 1, ..., n − 2."""
    return torch.arange(-1, n - 1, device=device)


def check_parents(parents: torch.Tensor) -> None:
    """ValueError unless every parent comes before its child (−1 = the root)."""
    if parents.ndim != 1 or parents.dtype != torch.long:
        raise ValueError(f"tree parents must be a 1-D long tensor, got {parents.dtype} {tuple(parents.shape)}")
    index = torch.arange(parents.shape[0], device=parents.device)
    if bool(((parents < -1) | (parents >= index)).any()):
        raise ValueError(f"tree parents must be −1 or an earlier node's index, got {parents.tolist()}")


def depths(parents: torch.Tensor) -> torch.Tensor:
    """[n] depth of each node: 1 for a child of the root, its parent's depth + 1 below that."""
    out = []
    for parent in parents.tolist():
        out.append(1 if parent < 0 else out[parent] + 1)
    return torch.tensor(out, dtype=torch.long, device=parents.device)


def positions(parents: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """[n] the absolute position of each node of a tree hanging after ``prefix_length`` tokens: the
    root's children sit at prefix_length − 1 + 1, their children one further (siblings share one)."""
    return prefix_length - 1 + depths(parents)


def ancestor_mask(parents: torch.Tensor) -> torch.Tensor:
    """[n, n] bool: row i is True at i and at each of its ancestors (the nodes row i may attend to)."""
    n = parents.shape[0]
    sees = torch.zeros(n, n, dtype=torch.bool, device=parents.device)
    for i, parent in enumerate(parents.tolist()):
        if parent >= 0:
            sees[i] = sees[parent]
        sees[i, i] = True
    return sees


def greedy_path(tokens: torch.Tensor, parents: torch.Tensor, predicted: torch.Tensor) -> list[int]:
    """The longest root-to-node path whose every token is the target's argmax at its parent.

    tokens [n] and parents [n] are the tree; predicted [n + 1] the target's argmax after the root
    (row 0) and after each node (row i + 1). Returns the node indices of the path, root side first;
    the target's own next token is then ``predicted[path[-1] + 1]`` (``predicted[0]`` if empty).
    Among siblings with the same token the first is taken (the same continuation either way).
    """
    children = _children(parents)
    token_list, predicted_list = tokens.tolist(), predicted.tolist()
    path, node = [], -1
    while True:
        wanted = predicted_list[node + 1]
        match = next((c for c in children.get(node, []) if token_list[c] == wanted), None)
        if match is None:
            return path
        path.append(match)
        node = match


def _children(parents: torch.Tensor) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for i, parent in enumerate(parents.tolist()):
        children.setdefault(parent, []).append(i)
    return children


def sample_path(tokens: torch.Tensor, parents: torch.Tensor, probs: torch.Tensor,
                generator: torch.Generator | None, draft_probs: torch.Tensor | None = None) -> tuple[list[int], int]:
    """Lossless sampling over a tree of point-mass drafts: (accepted node indices, the next token).

    probs [n + 1, V] is the target's (warped) distribution after the root (row 0) and after each
    node (row i + 1). At a node with distribution p, its children c₁, c₂, ... are tried in order:
    accept cᵢ with probability p(cᵢ) (its q is a point mass, so min(1, p/q) = p(cᵢ)); on a rejection
    p ← norm(p with p(cᵢ) = 0) and the next child is tried; when every child is rejected, or the
    node is a leaf, the next token is drawn from the current p. Each step's output is then exactly a
    draw from the target's p (the chi-square tests check it), whatever the children are.

    With ``draft_probs`` [n, V] (row i: the draft distribution q node i was sampled from; siblings are
    independent draws from their parent's q, with replacement) each child is accepted with
    min(1, p(cᵢ)/q(cᵢ)) and a rejection leaves p ← norm(max(0, p − q)) for the next sibling
    (SpecInfer's multi-round speculative sampling), again exactly a draw from p.
    """
    children = _children(parents)
    token_list = tokens.tolist()
    path, node = [], -1
    while True:
        p = probs[node + 1].double().clone()
        accepted = None
        for child in children.get(node, []):
            token = token_list[child]
            mass = float(p[token]) / float(p.sum())
            q = None if draft_probs is None else draft_probs[child].double()
            ratio = mass if q is None else (mass / float(q[token]) if float(q[token]) > 0 else 0.0)
            if ratio > 0 and float(torch.rand((), generator=generator, dtype=torch.float64)) < ratio:
                accepted = child
                break
            if q is None:
                p[token] = 0.0
            else:
                p = (p / p.sum() - q).clamp_min(0.0)
        if accepted is None:
            next_token = int(torch.multinomial((p / p.sum()).float(), 1, generator=generator))
            return path, next_token
        path.append(accepted)
        node = accepted


_ROUNDING = 1e-7  # a lift smaller than this is the float32 rounding of p itself, not a tolerance


def relaxed_path(tokens: torch.Tensor, parents: torch.Tensor, probs: torch.Tensor, relax, greedy: bool,
                 generator: torch.Generator | None) -> tuple[list[int], int, float]:
    """A relaxed rule applied per node: (accepted node indices, the next token, the mass moved).

    ``relax(children [m], p [m, V]) -> p̃ [m]`` is the rule's tolerance (``AcceptanceRule.relax`` with
    point-mass drafts): each child is judged as a one-token draft against its node's distribution p
    (probs [n + 1, V], rows as in :func:`sample_path`). Greedy: the child equal to argmax p is taken
    first, else the first child that p̃ makes the argmax (p(x) > 0); none: the next token is argmax p.
    Sampling: children are tried in turn as in :func:`sample_path`, each accepted with probability
    min(1, p̃) against the current (renormalised, rejected children zeroed) p. The moved mass is
    Σ (p̃ − p) over the accepted nodes, so each accepted token moves at most what the rule allows
    for one token.
    """
    children = _children(parents)
    path, node, moved = [], -1, 0.0
    while True:
        p = probs[node + 1].double()
        kids = children.get(node, [])
        accepted = None
        if greedy:
            best = int(p.argmax())
            exact = next((c for c in kids if int(tokens[c]) == best), None)
            if exact is not None:
                accepted = exact
            elif kids:
                ids = tokens[kids]
                p_at = p[ids]
                lifted = relax(ids, p[None].expand(len(kids), -1).to(probs.dtype)).double()
                lifted = torch.where(lifted > p_at + _ROUNDING, lifted, p_at)  # the rule's rows are in probs' dtype
                others = p.expand(len(kids), -1).scatter(1, ids[:, None], -1.0).amax(dim=-1)
                ok = ((lifted > others) & (p_at > 0)).nonzero()
                if ok.numel():
                    row = int(ok[0, 0])
                    accepted, moved = kids[row], moved + float(lifted[row] - p_at[row])
            if accepted is None:
                return path, best, moved
        else:
            p = p.clone()
            for child in kids:
                token = int(tokens[child])
                p_norm = p / p.sum()
                mass = float(p_norm[token])
                relaxed = float(relax(tokens[child: child + 1], p_norm[None].to(probs.dtype))[0]) if mass > 0 else 0.0
                lifted = relaxed if relaxed > mass + _ROUNDING else mass  # the rule's rows are in probs' dtype
                if lifted > 0 and float(torch.rand((), generator=generator, dtype=torch.float64)) < lifted:
                    accepted, moved = child, moved + min(lifted, 1.0) - mass
                    break
                p[token] = 0.0
            if accepted is None:
                return path, int(torch.multinomial((p / p.sum()).float(), 1, generator=generator)), moved
        path.append(accepted)
        node = accepted


def size_by_cost(scores: list[float], cost: torch.Tensor, max_nodes: int) -> int:
    """How many of the best nodes to verify: the n ≤ ``max_nodes`` that maximises expected tokens per
    unit of verification cost, (1 + Σ_{i<n} exp(scores[i])) / cost[n + 1].

    scores are cumulative draft log-probabilities, best first (exp(score) estimates the chance that
    the target accepts the node's whole path, so the sum estimates the accepted drafts); cost [K] is
    the measured cost of one target forward of k new tokens relative to one (cost[1] = 1; sizes past
    its end cost what its last entry does; see :func:`multispec.timing.verify_costs`). n = 0 (no
    draft) is allowed when nothing is worth verifying.
    """
    if cost.ndim != 1 or cost.shape[0] < 2:
        raise ValueError(f"cost must be a 1-D tensor of relative verification costs indexed by k >= 1, "
                         f"got shape {tuple(cost.shape)}")
    best_n, best_rate, expected = 0, 1.0 / float(cost[1]), 1.0
    for n, score in enumerate(scores[:max_nodes], start=1):
        expected += math.exp(score)
        rate = expected / float(cost[min(n + 1, cost.shape[0] - 1)])
        if rate > best_rate:
            best_n, best_rate = n, rate
    return best_n


def grow(root_logits: torch.Tensor, depth: int, branches: int, width: int, max_nodes: int,
         expand, cost: torch.Tensor | None = None, pick=None,
         rows: list | None = None) -> tuple[list[int], list[int]]:
    """A dynamic draft tree, EAGLE-2 style -> (tokens, parents) of its ``max_nodes`` best nodes.

    root_logits [V] are the drafter's logits for the token after the newest one. At each depth the
    ``width`` nodes of that depth with the highest cumulative draft log-probability get their
    ``branches`` likeliest children. ``expand(frontier, tokens, parents)`` feeds the frontier's nodes
    to the drafter (their ancestors were fed before, as earlier frontiers) and returns their logits
    [len(frontier), V]. The kept nodes are the best by cumulative log-probability; a node never scores
    above its parent, so every kept node's ancestors are kept (ties keep the earlier node first).
    With ``cost`` (relative verification cost per number of fed tokens) the number kept is chosen per
    tree by :func:`size_by_cost` instead of always ``max_nodes``. ``pick(logits [f, V]) -> ids [f, b]``
    replaces the top-``branches`` children (e.g. ``branches`` draws from the draft distribution);
    ``rows``, a list, receives the drafter's logits row [V] each kept node was picked from.
    """
    tokens: list[int] = []
    parents: list[int] = []
    scores: list[float] = []
    sources: list[torch.Tensor] = []  # the logits row each node was picked from
    frontier, frontier_logits = [-1], root_logits[None]
    for level in range(depth):
        logp = torch.log_softmax(frontier_logits.float(), dim=-1)  # [f, V]
        ids = logp.topk(min(branches, logp.shape[-1]), dim=-1).indices if pick is None else pick(frontier_logits)
        values = logp.gather(1, ids)
        start = len(tokens)
        for row, parent in enumerate(frontier):
            base = 0.0 if parent < 0 else scores[parent]
            for value, token in zip(values[row].tolist(), ids[row].tolist()):
                if value == float("-inf"):  # a token the drafter cannot emit (masked out): never a node
                    continue
                tokens.append(token)
                parents.append(parent)
                scores.append(base + value)
                if rows is not None:
                    sources.append(frontier_logits[row])
        if level == depth - 1 or len(tokens) == start:
            break
        frontier = sorted(range(start, len(tokens)), key=lambda i: -scores[i])[:width]
        frontier_logits = expand(frontier, tokens, parents)
    ranked = sorted(range(len(tokens)), key=lambda i: -scores[i])
    size = max_nodes if cost is None else size_by_cost([scores[i] for i in ranked], cost, max_nodes)
    keep = sorted(ranked[:size])
    if rows is not None:
        rows.extend(sources[i] for i in keep)
    index = {old: new for new, old in enumerate(keep)}
    return [tokens[i] for i in keep], [index[parents[i]] if parents[i] >= 0 else -1 for i in keep]
