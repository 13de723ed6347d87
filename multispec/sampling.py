"""Turning logits into the distributions p (target) and q (draft) and sampling from them.

Temperature, top-k and top-p follow Hugging Face semantics and order (temperature, then top-k, then
top-p) by using transformers' own logits warpers; the same warping is applied to target and draft.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass(frozen=True)
class Sampling:
    """Decoding temperature and filters. ``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def _warpers(self) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k is not None:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p is not None and self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [n, V] -> probabilities [n, V] (float32).

        Greedy decoding only needs the argmax, so it gets the plain softmax (which relaxed rules read).
        """
        logits = logits.float()
        if not self.greedy:
            logits = self._warpers()(None, logits)
        return torch.softmax(logits, dim=-1)

    def pick(self, probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """probs [n, V] -> tokens [n]: argmax when greedy, else one sample per row."""
        if self.greedy:
            return probs.argmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
