"""What one target forward costs on the machine at hand: the time of k new tokens relative to one,
which decides how large a token tree is worth verifying (:func:`multispec.trees.size_by_cost`).

Knows only the :class:`~multispec.lm.Verifier` interface (forward, rollback, reset); nothing about
drafters or modalities.
"""
from __future__ import annotations

import statistics
import time

import torch

from .lm import as_verifier

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32)


def forward_seconds(target, tokens: int, context: int = 128, repeats: int = 8) -> float:
    """Median seconds of one cached forward of ``tokens`` new tokens after ``context`` cached ones
    (random ids, fixed seed; the first runs warm up and are not counted)."""
    verifier = as_verifier(target)
    if tokens < 1 or context < 1 or repeats < 1:
        raise ValueError(f"tokens, context and repeats must be >= 1, got {tokens}, {context}, {repeats}")
    ids = torch.randint(0, verifier.vocab_size, (context + tokens,), generator=torch.Generator().manual_seed(0))
    ids = ids.to(verifier.device)
    times = []
    with torch.inference_mode():
        verifier.reset()
        verifier.forward(ids[:context])
        for _ in range(repeats + 3):
            start = time.perf_counter()
            verifier.forward(ids[context:])[-1, 0].item()  # .item() waits for an accelerator
            times.append(time.perf_counter() - start)
            verifier.rollback(context)
        verifier.reset()
    return statistics.median(times[3:])


def verify_costs(target, sizes: tuple[int, ...] = DEFAULT_SIZES, context: int = 128,
                 repeats: int = 8) -> torch.Tensor:
    """[max(sizes) + 1] the cost of one forward of k new tokens relative to one token, measured at
    ``sizes`` and linearly interpolated in between (entry 0 is unused and set to 1)."""
    if not sizes or sorted(set(sizes)) != list(sizes) or sizes[0] != 1:
        raise ValueError(f"sizes must be increasing, distinct and start at 1, got {sizes}")
    measured = [forward_seconds(target, k, context, repeats) for k in sizes]
    relative = [m / measured[0] for m in measured]
    costs = torch.ones(sizes[-1] + 1, dtype=torch.float64)
    for (k0, c0), (k1, c1) in zip(zip(sizes, relative), zip(sizes[1:], relative[1:])):
        for k in range(k0, k1 + 1):
            costs[k] = c0 + (c1 - c0) * (k - k0) / (k1 - k0)
    return costs
