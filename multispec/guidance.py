"""A verifier that shapes a causal LM's logits before acceptance: classifier-free guidance and masks.

:class:`GuidedLM` runs the conditional sequence and, when guided, an unconditional twin in the same
batch whose first tokens (the condition, e.g. a class label) are replaced by
``unconditional_prefix``; its logits are u + s·(c − u). ``allowed_tokens`` masks what each position
may hold (image codes only; one codec codebook slot), so p and q are zero elsewhere. Wrap the target
and the drafter's model the same way and the exact rules stay exact for the guided distribution.
"""
from __future__ import annotations

from typing import Callable

import torch

from .lm import CachedLM

# (predicted positions [n], the token right before each [n]) -> allowed [n, V] bool
AllowedTokens = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance u + s·(c − u) of conditional and unconditional logits [..., V] (float32)."""
    cond, uncond = cond.float(), uncond.float()
    return uncond + scale * (cond - uncond)


class GuidedLM(CachedLM):
    """A :class:`CachedLM` with optional classifier-free guidance and per-position token masks.

    Args:
        model: a transformers causal LM.
        guidance_scale: s; 1.0 runs the conditional sequence alone (no guidance).
        unconditional_prefix: [k] tokens that replace the first k tokens of the unconditional twin.
        allowed_tokens: a bool mask [V] for every position, or a function of the absolute positions
            [n] of the tokens being predicted and of the token right before each (the one just fed)
            returning [n, V]; None allows every token. A mask that allows one token forces it.
        forced_tokens: optional fast answer to "which token does the mask force at (position, the
            token before it)", an int or None; it must agree with ``allowed_tokens`` (the default
            derives it from the mask, one mask row per call).
    """

    def __init__(self, model: torch.nn.Module, guidance_scale: float = 1.0,
                 unconditional_prefix: torch.Tensor | None = None,
                 allowed_tokens: torch.Tensor | AllowedTokens | None = None,
                 forced_tokens: Callable[[int, int], int | None] | None = None):
        super().__init__(model)
        if guidance_scale != 1.0 and (unconditional_prefix is None or len(unconditional_prefix) == 0):
            raise ValueError("classifier-free guidance (guidance_scale != 1) needs an unconditional_prefix")
        if isinstance(allowed_tokens, torch.Tensor) and allowed_tokens.shape != (self.vocab_size,):
            raise ValueError(f"allowed_tokens mask must have shape [{self.vocab_size}], "
                             f"got {tuple(allowed_tokens.shape)}")
        self.guidance_scale = float(guidance_scale)
        self.unconditional_prefix = None if unconditional_prefix is None else \
            torch.as_tensor(unconditional_prefix).long().to(self.device)
        self.allowed_tokens = allowed_tokens
        self.forced_tokens = forced_tokens
        # a fixed mask forces the same token everywhere or nowhere: decide it once, not every step
        self._fixed_forced = self._single(allowed_tokens) if isinstance(allowed_tokens, torch.Tensor) else None

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def forced_token(self, position: int, previous: int) -> int | None:
        """The only token the mask allows at ``position`` after ``previous``, else None. The decoding
        loop appends such a token without a forward (every method, plain decoding included)."""
        if self.allowed_tokens is None or isinstance(self.allowed_tokens, torch.Tensor):
            return self._fixed_forced
        if self.forced_tokens is not None:
            return self.forced_tokens(position, previous)
        return self._single(self.allowed_tokens(torch.tensor([position]), torch.tensor([previous]))[0])

    @staticmethod
    def _single(allowed: torch.Tensor) -> int | None:
        """The id a mask [V] allows if it allows exactly one, else None."""
        ids = allowed.nonzero()
        return int(ids[0, 0]) if ids.shape[0] == 1 else None

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Append ``tokens`` [n]; return guided, masked logits [n, V] (or [1, V] if ``last_only``)."""
        start = self.length
        if not self.guided:
            logits = self._run(tokens[None], last_only)[0]
        else:
            uncond = tokens.clone()
            prefix = self.unconditional_prefix
            overlap = max(0, min(prefix.shape[0] - start, tokens.shape[0]))
            uncond[:overlap] = prefix[start:start + overlap]
            cond_logits, uncond_logits = self._run(torch.stack([tokens, uncond]), last_only)
            logits = guided_logits(cond_logits, uncond_logits, self.guidance_scale)
        if self.allowed_tokens is not None:
            # logits row i predicts the token at position start + i + 1
            positions = torch.arange(start + 1, start + tokens.shape[0] + 1, device=tokens.device)[-logits.shape[0]:]
            allowed = self.allowed_tokens
            allowed = allowed.expand(positions.shape[0], -1) if isinstance(allowed, torch.Tensor) \
                else allowed(positions, tokens[-logits.shape[0]:])
            logits = logits.float().masked_fill(~allowed.to(logits.device), float("-inf"))
        return logits
