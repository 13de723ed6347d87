"""When speculation stops paying as the batch grows, and how far to turn it down.

A batched forward of n tokens costs ``cost(n)`` seconds (measured on the machine at hand and
interpolated). At batch b with every row drafting γ tokens accepted at rate α, a step yields
b · E(α, γ) tokens, E = (1 − α^(γ+1)) / (1 − α), for ``cost(b · (γ + 1)) + γ · draft_cost(b) +
γ · b · d`` seconds (draft_cost: a draft model's batched step; d: what each row's own drafting costs
per token, e.g. a feature head run row by row, or n-gram lookup); plain decoding yields b tokens for ``cost(b)``. :class:`BatchPolicy` picks the γ with the
best tokens per second (0: speculation off) from the live batch size and the acceptance measured so
far, and caps every row's draft at it. Once the forward is compute-bound (large b), the extra tokens
cost what they save and the cap drops to 0, as vLLM's measurements show speculation turning slower
under high load.

Knows nothing about drafting methods, rules or modalities (it sees drafted/accepted counts).
"""
from __future__ import annotations

import threading

import torch

from . import timing
from .drafters import _empty

SIZES = (1, 2, 4, 8, 16, 32, 64, 128)


def _interpolate(points: dict[int, float], n: int) -> float:
    """Piecewise-linear cost at n tokens from measured {tokens: seconds}; linear past the last two."""
    sizes = sorted(points)
    if n <= sizes[0]:
        return points[sizes[0]]
    for k0, k1 in zip(sizes, sizes[1:]):
        if n <= k1:
            return points[k0] + (points[k1] - points[k0]) * (n - k0) / (k1 - k0)
    k0, k1 = sizes[-2], sizes[-1]
    return points[k1] + (points[k1] - points[k0]) * (n - k1) / (k1 - k0)


class BatchPolicy:
    """Caps the draft length of every row of a batch (see the module docstring).

    ``forward_seconds``: {tokens in one forward: seconds} of the target; ``draft_seconds``: the same
    for one batched drafting step of a draft model ({} for drafters without one); ``row_draft_seconds``:
    seconds per drafted token each row spends drafting on its own; ``prior_acceptance``: α before
    any draft was judged; ``max_draft_tokens``: the largest cap considered.
    """

    def __init__(self, forward_seconds: dict[int, float], draft_seconds: dict[int, float] | None = None,
                 prior_acceptance: float = 0.6, max_draft_tokens: int = 16, row_draft_seconds: float = 0.0):
        if not forward_seconds or any(k < 1 or v <= 0 for k, v in forward_seconds.items()):
            raise ValueError(f"forward_seconds must map token counts >= 1 to seconds > 0, got {forward_seconds}")
        if not 0.0 <= prior_acceptance < 1.0:
            raise ValueError(f"prior_acceptance must be in [0, 1), got {prior_acceptance}")
        if row_draft_seconds < 0:
            raise ValueError(f"row_draft_seconds must be >= 0, got {row_draft_seconds}")
        self.forward_seconds, self.draft_seconds = dict(forward_seconds), dict(draft_seconds or {})
        self.row_draft_seconds = float(row_draft_seconds)
        self.prior_acceptance, self.max_draft_tokens = prior_acceptance, max_draft_tokens
        self.drafted = self.accepted = 0
        self._lock = threading.Lock()

    @classmethod
    def measure(cls, target, draft_model=None, sizes=SIZES, **kwargs) -> "BatchPolicy":
        """Time the target (and a draft model's single steps) here; ``kwargs`` go to the constructor."""
        forward = {n: timing.forward_seconds(target, n, repeats=4) for n in sizes}
        draft = {n: timing.forward_seconds(draft_model, n, repeats=4) for n in sizes} if draft_model is not None else None
        return cls(forward, draft, **kwargs)

    @property
    def acceptance(self) -> float:
        """α: accepted / drafted so far (pseudo-counted with the prior as 8 drafted tokens)."""
        return (self.accepted + 8 * self.prior_acceptance) / (self.drafted + 8)

    def observe(self, drafted: int, accepted: int) -> None:
        with self._lock:
            self.drafted += drafted
            self.accepted += accepted

    def tokens_per_second(self, rows: int, gamma: int, alpha: float | None = None) -> float:
        alpha = self.acceptance if alpha is None else alpha
        expected = gamma + 1 if alpha >= 1.0 else (1 - alpha ** (gamma + 1)) / (1 - alpha)
        seconds = _interpolate(self.forward_seconds, rows * (gamma + 1))
        if gamma and self.draft_seconds:
            seconds += gamma * _interpolate(self.draft_seconds, rows)
        seconds += gamma * rows * self.row_draft_seconds
        return rows * expected / seconds

    def cap(self, rows: int) -> int:
        """The draft length with the most tokens per second at ``rows`` live rows (0: do not draft)."""
        alpha = self.acceptance
        rates = [self.tokens_per_second(rows, g, alpha) for g in range(self.max_draft_tokens + 1)]
        return int(torch.tensor(rates).argmax())


class Capped:
    """A row's drafter whose draft length the shared :class:`BatchPolicy` caps at the live batch size."""

    def __init__(self, drafter, policy: BatchPolicy, live_rows):
        self.drafter, self.policy, self.live_rows = drafter, policy, live_rows
        self.vocab_size = drafter.vocab_size
        self.skipped = 0  # steps drafted nothing because the cap was 0

    def __getattr__(self, name):  # feature_layers, observe_features, ... of the wrapped drafter
        return getattr(self.drafter, name)

    def reset(self) -> None:
        self.drafter.reset()

    def propose(self, tokens, max_tokens, sampling, generator):
        cap = self.policy.cap(self.live_rows())
        if cap == 0:
            self.skipped += 1
            return _empty(tokens.device)
        return self.drafter.propose(tokens, min(max_tokens, cap), sampling, generator)

    def observe(self, feedback) -> None:
        self.policy.observe(feedback.num_drafted, feedback.num_accepted)
        self.drafter.observe(feedback)
