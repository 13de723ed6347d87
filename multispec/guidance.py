"""Guided, masked logits: classifier-free guidance and per-position token masks, in one place.

One implementation serves decoding (:class:`GuidedLM`, the verifier and the drafter's model),
distillation (``models.recipes.token_lm.GuidedTeacher``) and target sampling
(``models.recipes.target_samples.sample_batch``): :func:`guided_forward` runs the conditional rows
and, when guided, their unconditional twins (the first tokens, the condition, replaced by an
``unconditional_prefix``) in one batch, combines them as u + s·(c − u) (:func:`guided_logits`) and
masks what each position may not hold (:func:`mask_logits`; image codes only, one codec codebook
slot), so p and q are zero there. A mask is given as a bool tensor of allowed ids, or as a function
of the predicted positions and the token before each (:data:`AllowedTokens`), or one of those per
row (:func:`allowed_at` resolves them). Wrap the target and the drafter's model the same way and the
exact rules stay exact for the guided distribution.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from . import trees
from .lm import CachedLM

# (predicted positions [n], the token right before each [n]) -> allowed [n, V] bool
AllowedTokens = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# a mask [V] / [n, V] / [B, n, V] of allowed ids, a function, one of those per row, or None (all allowed)
Mask = Union[torch.Tensor, AllowedTokens, Sequence[Union[torch.Tensor, AllowedTokens]], None]


def guided_logits(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance u + s·(c − u) of conditional and unconditional logits [..., V] (float32)."""
    cond, uncond = cond.float(), uncond.float()
    return uncond + scale * (cond - uncond)


def unconditional_twin(tokens: torch.Tensor, prefix: torch.Tensor, start: int = 0,
                       positions: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [B, n] at absolute positions start.. (or ``positions`` [n]) -> a copy whose positions
    below k hold ``prefix`` [k]."""
    twin = tokens.clone()
    if positions is not None:
        inside = positions < prefix.shape[0]
        twin[:, inside] = prefix.to(tokens.device)[positions[inside]]
        return twin
    overlap = max(0, min(prefix.shape[0] - start, tokens.shape[1]))
    twin[:, :overlap] = prefix[start:start + overlap].to(tokens.device)
    return twin


def allowed_at(allowed: Mask, positions: torch.Tensor, previous: torch.Tensor) -> torch.Tensor | None:
    """The allowed ids [B, n, V] (or a tensor that broadcasts to it) of the tokens at ``positions`` [n]
    of every row, each after ``previous`` [B, n]; None when ``allowed`` is None (all allowed).

    ``allowed`` is a bool tensor ([V], [n, V] or [B, n, V]), an :data:`AllowedTokens` function (shared
    by the rows), or a sequence of B of those, one per row (e.g. a mask that depends on each prompt).
    """
    if allowed is None:
        return None
    if isinstance(allowed, torch.Tensor):
        return allowed
    rows, n = previous.shape
    if callable(allowed):
        return allowed(positions.repeat(rows), previous.reshape(-1)).reshape(rows, n, -1)
    if len(allowed) != rows:
        raise ValueError(f"one mask per row: got {len(allowed)} masks for {rows} rows")
    per_row = [allowed_at(mask, positions, previous[b:b + 1]) for b, mask in enumerate(allowed)]
    return torch.cat([mask.expand(1, n, -1) if mask.dim() < 3 else mask for mask in per_row])


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """logits [..., V] -> float32 logits with −inf where ``allowed`` (bool, broadcasting to them) is False.

    Raises ValueError where a row would allow no token (nothing could be sampled there).
    """
    if allowed.dtype != torch.bool or allowed.shape[-1] != logits.shape[-1]:
        raise ValueError(f"the allowed-tokens mask must be bool [..., {logits.shape[-1]}], "
                         f"got {allowed.dtype} {tuple(allowed.shape)}")
    allowed = allowed.to(logits.device)
    some = allowed.any(-1)
    if not bool(some.all()):
        empty = (~some).nonzero()
        raise ValueError(f"the allowed-tokens mask forbids every token in {empty.shape[0]} row(s) "
                         f"(first at index {tuple(empty[0].tolist())}): nothing could be sampled there")
    return logits.float().masked_fill(~allowed, float("-inf"))


def guided_forward(run: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor, *, scale: float = 1.0,
                   unconditional_prefix: torch.Tensor | None = None, start: int = 0,
                   allowed: Mask = None, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Guided, masked logits [B, r, V] of ``tokens`` [B, n] at absolute positions start..start+n−1
    (or at ``positions`` [n], e.g. the nodes of a token tree, where siblings share a position).

    ``run`` maps input ids [R, n] to logits [R, r, V] (a model call, cached or not; r = n, or 1 for
    the last only). With ``scale`` != 1 it gets the B rows and their unconditional twins
    (:func:`unconditional_twin`) in one batch of 2B and the halves are combined by
    :func:`guided_logits`. Logits row i predicts the token at position start + n − r + i + 1 right
    after tokens[:, n − r + i]; ``allowed`` (any form :func:`allowed_at` takes) masks those
    (:func:`mask_logits`). Without guidance or mask the model's logits come back unchanged.
    """
    if scale != 1.0:
        if unconditional_prefix is None or len(unconditional_prefix) == 0:
            raise ValueError("classifier-free guidance (scale != 1) needs an unconditional_prefix")
        both = run(torch.cat([tokens, unconditional_twin(tokens, unconditional_prefix, start, positions)]))
        logits = guided_logits(*both.chunk(2), scale)
    else:
        logits = run(tokens)
    if allowed is None:
        return logits
    rows, n = logits.shape[1], tokens.shape[1]
    fed = torch.arange(start, start + n, device=tokens.device) if positions is None else positions.to(tokens.device)
    return mask_logits(logits, allowed_at(allowed, fed[n - rows:] + 1, tokens[:, n - rows:]))


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
        return self.forward_rows(tokens[None], last_only)[0]

    def forward_tree(self, tokens: torch.Tensor, parents: torch.Tensor, tree_start: int | None = None) -> torch.Tensor:
        """Append tokens [m], the last m nodes of a tree (see :meth:`CachedLM.forward_tree`); return
        guided logits [m, V], each node's row masked for the position after it and the node's token
        (the unconditional twin holds the prefix wherever a node's position lies inside it)."""
        tree_start = self.length if tree_start is None else tree_start
        positions = trees.positions(parents, tree_start)[parents.shape[0] - tokens.shape[0]:]
        return guided_forward(lambda ids: self._run_tree(ids, parents, tree_start), tokens[None],
                              scale=self.guidance_scale, unconditional_prefix=self.unconditional_prefix,
                              start=tree_start, allowed=self.allowed_tokens, positions=positions)[0]

    def forward_rows(self, tokens: torch.Tensor, last_only: bool = False, allowed: Mask = None) -> torch.Tensor:
        """Append ``tokens`` [B, n] (B rows sharing positions, e.g. a batch of same-length prompts);
        return guided logits [B, n or 1, V] masked by ``allowed`` (any form :func:`allowed_at` takes;
        None: the ``allowed_tokens`` given at construction)."""
        return guided_forward(lambda ids: self._run(ids, last_only), tokens, scale=self.guidance_scale,
                              unconditional_prefix=self.unconditional_prefix, start=self.length,
                              allowed=self.allowed_tokens if allowed is None else allowed)
