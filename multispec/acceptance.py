"""Verification rules: pure functions of (draft tokens, q, p, generator) deciding what is accepted.

Terms. The drafter proposes γ tokens x_1..x_γ with draft probabilities q (or none: a point mass).
The target scores all γ+1 positions in one forward, giving p [γ+1, V]. A rule accepts a prefix of
the draft (``num_accepted``) and then emits one token of the target's own (``next_token``): the
*recovered* token at the first rejection, or the *bonus* token after a full accept.

Exact rules (lossless): :class:`Greedy` (argmax match) and :class:`SpeculativeSampling` (accept x with
probability min(1, p(x)/q(x)); on rejection sample from norm(max(0, p − q)); q a point mass for
model-free drafters). Relaxed rules raise the target probability of a drafted token to p̃(x) ≥ p(x)
before the same test and report the mass they moved, Σ (p̃(x) − p(x)) over accepted tokens. Under
greedy decoding a token is accepted when p̃(x) makes it the argmax. A token the target gives zero
probability (e.g. masked out of a codebook slot) is never accepted, relaxed or not. These rules know
no model, no modality and no cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Verdict:
    num_accepted: int  # drafted tokens accepted, a prefix of the draft
    next_token: int  # recovered token (after a rejection) or bonus token (after a full accept)
    moved_mass: float = 0.0  # Σ (p̃(x) − p(x)) over the accepted drafted tokens (0 for exact rules)


def _prob_of(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """probs [≥γ, V], tokens [γ] -> probs[i, tokens[i]] [γ]."""
    return probs[: tokens.shape[0]].gather(1, tokens[:, None]).squeeze(1)


def _draft_probs_at_tokens(draft_tokens: torch.Tensor, draft_probs: torch.Tensor | None) -> torch.Tensor:
    """q(x_i) [γ]; a missing q is a point mass on the drafted token."""
    if draft_probs is None:
        return torch.ones(draft_tokens.shape[0], device=draft_tokens.device)
    return _prob_of(draft_probs, draft_tokens)


def verify(
    draft_tokens: torch.Tensor,  # [γ] int64
    draft_probs: torch.Tensor | None,  # [γ, V] q, or None for a point mass
    target_probs: torch.Tensor,  # [γ+1, V] p after the same warping as q
    relaxed_target: torch.Tensor | None = None,  # [γ] p̃(x_i) ≥ p(x_i); None = exact
    *,
    greedy: bool,
    generator: torch.Generator | None = None,
) -> Verdict:
    """The one verification routine every rule uses (see the module docstring)."""
    gamma = draft_tokens.shape[0]
    p_at_x = _prob_of(target_probs, draft_tokens)  # [γ]
    p_tilde = p_at_x if relaxed_target is None else torch.where(
        p_at_x > 0, torch.maximum(relaxed_target, p_at_x), p_at_x)  # p(x) = 0 is never relaxed
    if greedy:
        argmax = target_probs[:gamma].argmax(dim=-1)
        others = target_probs[:gamma].scatter(1, draft_tokens[:, None], -1.0).amax(dim=-1)
        ok = ((draft_tokens == argmax) | (p_tilde > others)) & (p_at_x > 0)
    else:
        q_at_x = _draft_probs_at_tokens(draft_tokens, draft_probs)
        u = torch.rand(gamma, generator=generator, device=target_probs.device)
        ok = u * q_at_x < p_tilde  # u < min(1, p̃/q) without dividing by q
    rejected = (~ok).nonzero()
    n = int(rejected[0, 0]) if rejected.numel() else gamma
    moved = float((p_tilde[:n] - p_at_x[:n]).sum()) if relaxed_target is not None else 0.0

    p_next = target_probs[n]
    if greedy:
        return Verdict(n, int(p_next.argmax()), moved)
    if n < gamma:  # recovered token from the residual norm(max(0, p − q))
        if draft_probs is None:
            residual = p_next.clone()
            residual[draft_tokens[n]] = 0.0
        else:
            residual = (p_next - draft_probs[n]).clamp_min(0.0)
        if float(residual.sum()) > 1e-12:
            p_next = residual / residual.sum()
    token = torch.multinomial(p_next, 1, generator=generator)
    return Verdict(n, int(token), moved)


class AcceptanceRule:
    """Base class: a rule maps (draft, q, p) to a :class:`Verdict`. Subclasses set ``relax``."""

    lossless: bool = True

    def relax(self, draft_tokens: torch.Tensor, draft_probs: torch.Tensor | None,
              target_probs: torch.Tensor, greedy: bool) -> torch.Tensor | None:
        """p̃(x_i) [γ] for the drafted tokens, or None for the exact rule."""
        return None

    def __call__(self, draft_tokens, draft_probs, target_probs, *, greedy, generator=None) -> Verdict:
        if draft_tokens.numel() == 0:
            relaxed = None
        else:
            relaxed = self.relax(draft_tokens, draft_probs, target_probs, greedy)
        return verify(draft_tokens, draft_probs, target_probs, relaxed,
                      greedy=greedy, generator=generator)


class ExactOn(AcceptanceRule):
    """Wrap a relaxed rule so positions where the drafted token or the target's most likely token is
    in ``token_ids`` are judged exactly (e.g. end-of-sequence: a tolerance must neither end an
    utterance the target would continue nor talk it out of stopping)."""

    lossless = False

    def __init__(self, rule: AcceptanceRule, token_ids):
        self.rule = rule
        self.token_ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        relaxed = self.rule.relax(draft_tokens, draft_probs, target_probs, greedy)
        if relaxed is None:
            return None
        top = target_probs[: draft_tokens.shape[0]].argmax(dim=-1)
        ids = self.token_ids.to(top.device)
        strict = torch.isin(top, ids) | torch.isin(draft_tokens, ids)
        return torch.where(strict, _prob_of(target_probs, draft_tokens), relaxed)


class Greedy(AcceptanceRule):
    """Exact match with the target's argmax (lossless under temperature 0)."""

    def __call__(self, draft_tokens, draft_probs, target_probs, *, greedy, generator=None) -> Verdict:
        if not greedy:
            raise ValueError("acceptance=Greedy() needs temperature=0; use SpeculativeSampling() to sample")
        return super().__call__(draft_tokens, draft_probs, target_probs, greedy=True)


class SpeculativeSampling(AcceptanceRule):
    """Leviathan/Chen speculative sampling: lossless at any temperature, top-k and top-p."""


def _tolerated_boost(tolerated, draft_tokens, draft_probs, target_probs, greedy) -> torch.Tensor:
    """p̃(x) that makes a tolerated token certain to pass (argmax under greedy, p̃ ≥ q otherwise)."""
    gamma = draft_tokens.shape[0]
    p_at_x = _prob_of(target_probs, draft_tokens)
    if greedy:  # just above the best other token, so a tolerated token becomes the argmax
        lift = target_probs[:gamma].scatter(1, draft_tokens[:, None], -1.0).amax(dim=-1) + 1e-6
    else:
        lift = _draft_probs_at_tokens(draft_tokens, draft_probs)
    return torch.where(tolerated, torch.maximum(p_at_x, lift), p_at_x)


@dataclass(frozen=True)
class TypicalAcceptance(AcceptanceRule):
    """Medusa's typical acceptance (lossy): x passes if p(x) > min(ε, δ·exp(−H(p))).

    Tokens that fail the typicality test still get the exact test, so this only ever accepts more.
    """

    epsilon: float = 0.3
    delta: float = 0.09
    lossless: bool = field(default=False, init=False)

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        p = target_probs[: draft_tokens.shape[0]]
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)
        threshold = torch.clamp(self.delta * torch.exp(-entropy), max=self.epsilon)
        p_at_x = _prob_of(p, draft_tokens)
        return _tolerated_boost(p_at_x > threshold, draft_tokens, draft_probs, target_probs, greedy)


class TopKTolerance(AcceptanceRule):
    """Accept a drafted token that is among the target's k most likely (lossy; k=1 is exact greedy).

    ``k`` is one number or a per-token tensor [V] (e.g. k per codec codebook level, expanded over each
    level's token ids, as :class:`AdditiveTolerance`'s β); a token x is tolerated when fewer than
    k(x) tokens are more likely than it. ``min_ratio`` ρ adds a floor: x is tolerated only if also
    p(x) ≥ ρ·max p, so where the target is sure of one token its runners-up still face the exact
    test. Tokens that are not tolerated still get the exact test.
    """

    lossless = False

    def __init__(self, k: int | torch.Tensor = 3, min_ratio: float = 0.0):
        k = torch.as_tensor(k)
        if k.ndim > 1 or k.is_floating_point() or k.numel() == 0 or bool((k < 1).any()):
            raise ValueError(f"TopKTolerance: k must be an integer >= 1 or a [V] tensor of them, got {k.tolist()}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"TopKTolerance: min_ratio must lie in [0, 1], got {min_ratio}")
        self.k, self.min_ratio = k.long(), float(min_ratio)

    def __repr__(self) -> str:
        k = self.k.tolist() if self.k.ndim else int(self.k)
        return f"TopKTolerance(k={k}" + (f", min_ratio={self.min_ratio})" if self.min_ratio else ")")

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        p = target_probs[: draft_tokens.shape[0]]
        k = self.k.to(draft_tokens.device)
        if k.ndim == 1:
            if k.shape[0] != p.shape[-1]:
                raise ValueError(f"TopKTolerance: k has {k.shape[0]} entries but the target has {p.shape[-1]} tokens")
            k = k[draft_tokens]
        p_at_x = _prob_of(p, draft_tokens)
        above = (p > p_at_x[:, None]).sum(dim=-1)  # [γ] tokens more likely than x
        tolerated = (above < k) & (p_at_x >= self.min_ratio * p.amax(dim=-1))
        return _tolerated_boost(tolerated, draft_tokens, draft_probs, target_probs, greedy)


def nearest_neighbors(embeddings: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """[V, D] -> [V, k] indices of each row's k nearest other rows by L2 distance."""
    rows = []
    for start in range(0, embeddings.shape[0], chunk):
        dist = torch.cdist(embeddings[start:start + chunk], embeddings)  # [c, V]
        idx = torch.arange(start, start + dist.shape[0])
        dist[torch.arange(dist.shape[0]), idx] = float("inf")  # a token is not its own neighbour
        rows.append(dist.topk(k, dim=-1, largest=False).indices)
    return torch.cat(rows)


def neighbor_table(codebooks, vocab_size: int, k: int) -> torch.Tensor:
    """Neighbours within each codebook, as token ids: [vocab_size, k] int64, −1 where there is none.

    ``codebooks`` is a list of (first_token_id, embeddings [K, D]): codebook rows i are token ids
    first_token_id + i (e.g. one VQ codebook at id 0, or one per speech codebook level at its slot
    offset). Tokens outside every codebook (class labels, text, specials) have no neighbours.
    """
    table = torch.full((vocab_size, k), -1, dtype=torch.long)
    for first, emb in codebooks:
        emb = emb.detach().float().cpu()
        if emb.ndim != 2 or first < 0 or first + emb.shape[0] > vocab_size:
            raise ValueError(f"codebook at token {first} of shape {tuple(emb.shape)} does not fit a "
                             f"vocabulary of {vocab_size}")
        m = min(k, emb.shape[0] - 1)
        table[first:first + emb.shape[0], :m] = nearest_neighbors(emb, m) + first
    return table


class _NeighborRule(AcceptanceRule):
    """Shared set-up of the rules that look at a token's neighbours in an embedding table."""

    lossless = False

    def __init__(self, embeddings: torch.Tensor | None, k: int, neighbors: torch.Tensor | None):
        name = type(self).__name__
        if k < 1:
            raise ValueError(f"{name}: k must be >= 1, got {k}")
        if neighbors is None:
            if embeddings is None or embeddings.ndim != 2:
                shape = None if embeddings is None else tuple(embeddings.shape)
                raise ValueError(f"{name}: embeddings must be [V, D], got {shape}")
            neighbors = neighbor_table([(0, embeddings)], embeddings.shape[0], k)
        self.neighbors = neighbors[:, :k].long()  # [V, k], −1 = no neighbour
        self.k = self.neighbors.shape[1]

    @classmethod
    def from_codebooks(cls, codebooks, vocab_size: int, k: int, **kwargs):
        """Build the rule over several codebooks placed in a larger vocabulary (see neighbor_table)."""
        return cls(None, k=k, neighbors=neighbor_table(codebooks, vocab_size, k), **kwargs)

    def _neighbors_of(self, draft_tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
        if vocab_size != self.neighbors.shape[0]:
            raise ValueError(f"{type(self).__name__}: neighbour table covers {self.neighbors.shape[0]} "
                             f"tokens but the target has {vocab_size}")
        return self.neighbors.to(draft_tokens.device)[draft_tokens]  # [γ, k]


def _mass_of(probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """probs [γ, V], ids [γ, k] with −1 = none -> probs at ids [γ, k] (0 where none)."""
    return probs.gather(1, ids.clamp_min(0)) * (ids >= 0)


class NeighborhoodRelaxation(_NeighborRule):
    """LANTERN: lend x the mass of its nearest neighbours in an embedding table, at most δ in total.

    Neighbours n_1..n_k of each token are ranked by L2 distance between rows of ``embeddings`` [V, D]
    (e.g. a VQ codebook; or ``from_codebooks`` for codebooks inside a larger vocabulary). For a
    drafted x take the largest m with Σ_{i≤m} p(n_i) ≤ δ and set p̃(x) = p(x) + Σ_{i≤m} p(n_i): the
    total-variation mass moved is at most δ. ``max_ratio`` (λ, LANTERN++) caps p̃(x) ≤ λ·p(x).
    δ = 0 gives the exact rule's decisions.
    """

    def __init__(self, embeddings: torch.Tensor | None = None, k: int = 1000, delta: float = 0.1,
                 max_ratio: float | None = None, *, neighbors: torch.Tensor | None = None):
        if delta < 0:
            raise ValueError(f"NeighborhoodRelaxation: delta must be >= 0, got {delta}")
        if embeddings is not None and neighbors is None:
            k = min(k, embeddings.shape[0] - 1)
        super().__init__(embeddings, k, neighbors)
        self.delta = float(delta)
        self.max_ratio = max_ratio

    nearest_neighbors = staticmethod(nearest_neighbors)

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        p = target_probs[: draft_tokens.shape[0]]
        nbrs = self._neighbors_of(draft_tokens, p.shape[-1])  # [γ, k]
        cumulative = _mass_of(p, nbrs).cumsum(dim=-1)  # [γ, k]
        borrowed = torch.where(cumulative <= self.delta, cumulative, torch.zeros_like(cumulative)).amax(dim=-1)
        p_at_x = _prob_of(p, draft_tokens)
        p_tilde = p_at_x + borrowed
        if self.max_ratio is not None:
            p_tilde = torch.minimum(p_tilde, self.max_ratio * p_at_x)
        return p_tilde


class GroupAcceptance(_NeighborRule):
    """Grouped speculative decoding (GSD-style, lossy): judge x by the mass of its group.

    G(x) = {x} ∪ its ``group_size − 1`` nearest neighbours in an embedding table. Accept with
    min(1, Σ_{y∈G(x)} p(y) / Σ_{y∈G(x)} q(y)) (q a point mass when the drafter has none); on a
    rejection the recovered token comes from norm(max(0, p − q)) as in the exact rule. Under greedy
    decoding x passes when the target's argmax is in G(x). ``group_size = 1`` is the exact rule.
    """

    def __init__(self, embeddings: torch.Tensor | None = None, group_size: int = 4, *,
                 neighbors: torch.Tensor | None = None):
        if group_size < 1:
            raise ValueError(f"GroupAcceptance: group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        if group_size == 1:  # no neighbours needed
            vocab = neighbors.shape[0] if neighbors is not None else embeddings.shape[0]
            neighbors = torch.full((vocab, 1), -1, dtype=torch.long)
        super().__init__(embeddings, max(1, group_size - 1), neighbors)

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        gamma = draft_tokens.shape[0]
        p = target_probs[:gamma]
        group = torch.cat([draft_tokens[:, None], self._neighbors_of(draft_tokens, p.shape[-1])], 1)  # [γ, G]
        if greedy:
            in_group = (group == p.argmax(dim=-1, keepdim=True)).any(dim=-1)
            return _tolerated_boost(in_group, draft_tokens, draft_probs, target_probs, greedy)
        group_p = _mass_of(p, group).sum(dim=-1)  # [γ]
        q_at_x = _draft_probs_at_tokens(draft_tokens, draft_probs)
        group_q = q_at_x if draft_probs is None else _mass_of(draft_probs[:gamma], group).sum(dim=-1)
        relaxed = q_at_x * (group_p / group_q.clamp_min(1e-30)).clamp(max=1.0)  # u·q < p̃ ⇔ u < min(1, P/Q)
        # where the neighbours add no target mass (e.g. group_size 1), keep p(x) itself: q·(p/q) can
        # round above p(x) and would report moved mass for the exact test
        p_at_x = _prob_of(p, draft_tokens)
        return torch.where(group_p > p_at_x, relaxed, p_at_x)


class AdditiveTolerance(AcceptanceRule):
    """SSD-style additive tolerance (lossy): accept x if u < min(1, p(x)/q(x)) + β(x).

    ``beta`` is one number or a per-token tensor [V] (e.g. β per codec codebook level, expanded over
    each level's token ids). Under greedy decoding x passes when p(x) ≥ max p − β(x). A token with
    p(x) = 0 is never accepted. β = 0 is the exact rule.
    """

    lossless = False

    def __init__(self, beta: float | torch.Tensor = 0.1):
        beta = torch.as_tensor(beta, dtype=torch.float32)
        if beta.ndim > 1 or bool((beta < 0).any()) or not bool(torch.isfinite(beta).all()):
            raise ValueError("AdditiveTolerance: beta must be a number >= 0 or a [V] tensor of them")
        self.beta = beta

    def relax(self, draft_tokens, draft_probs, target_probs, greedy):
        gamma = draft_tokens.shape[0]
        beta = self.beta.to(draft_tokens.device)
        if beta.ndim == 1:
            if beta.shape[0] != target_probs.shape[-1]:
                raise ValueError(f"AdditiveTolerance: beta has {beta.shape[0]} entries but the target "
                                 f"has {target_probs.shape[-1]} tokens")
            beta = beta[draft_tokens]
        p_at_x = _prob_of(target_probs, draft_tokens)
        if greedy:
            tolerated = p_at_x >= target_probs[:gamma].amax(dim=-1) - beta
            return _tolerated_boost(tolerated, draft_tokens, draft_probs, target_probs, greedy)
        return p_at_x + beta * _draft_probs_at_tokens(draft_tokens, draft_probs)  # u·q < p + β·q
