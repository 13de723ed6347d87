"""Argument checks for the public API: each bad input raises ValueError naming the argument."""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def check_input_ids(input_ids, vocab_size: int) -> torch.Tensor:
    """LongTensor [1, T] with ids in [0, vocab_size) -> the prompt as a 1-D tensor [T]."""
    if not isinstance(input_ids, torch.Tensor):
        raise ValueError(f"input_ids must be a torch.LongTensor of shape [1, T], got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids (torch.long), got dtype {input_ids.dtype}")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must have shape [1, T], got {tuple(input_ids.shape)}")
    if input_ids.shape[0] != 1:
        raise ValueError(f"input_ids has batch size {input_ids.shape[0]}; stream() decodes one sequence "
                         f"(multispec.generate takes a batch with its attention_mask)")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the prompt needs at least one token")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"input_ids contains token id {bad}, outside the target's vocabulary [0, {vocab_size})")
    return input_ids[0].long()


def check_batch(input_ids, attention_mask, vocab_size: int) -> list[torch.Tensor]:
    """LongTensor [B, T] and its attention mask [B, T] (1 = token, 0 = padding; each row's tokens one
    contiguous run, left padding as Hugging Face batches) -> each row's prompt [T_b]."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a torch.LongTensor of shape [B, T], got {shape}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}, got {shape}")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    prompts = []
    for row in range(input_ids.shape[0]):
        keep = attention_mask[row].bool()
        where = keep.nonzero()[:, 0]
        if where.numel() == 0:
            raise ValueError(f"attention_mask row {row} is all padding: every prompt needs at least one token")
        if int(where[-1] - where[0]) + 1 != where.numel():
            raise ValueError(f"attention_mask row {row} has padding between its tokens "
                             f"({attention_mask[row].tolist()}); pad on one side only (left, as Hugging Face batches)")
        prompts.append(check_input_ids(input_ids[row: row + 1, keep], vocab_size))
    return prompts


def check_pad(pad_token_id) -> None:
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, Integral) or pad_token_id < 0:
        raise ValueError(f"pad_token_id must be a token id >= 0, got {pad_token_id!r}")


def check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, Real) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def check_eos(eos_token_id, vocab_size: int) -> frozenset[int]:
    if eos_token_id is None:
        return frozenset()
    ids = [eos_token_id] if isinstance(eos_token_id, Integral) else list(eos_token_id)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < vocab_size:
            raise ValueError(f"eos_token_id must be token ids in [0, {vocab_size}), got {eos_token_id!r}")
    return frozenset(int(i) for i in ids)


def check_drafter(drafter, vocab_size: int) -> None:
    if drafter is None:
        return
    for method in ("reset", "propose", "observe"):
        if not callable(getattr(drafter, method, None)):
            raise ValueError(f"drafter must implement multispec.drafters.Drafter (vocab_size, reset, propose, "
                             f"observe); {type(drafter).__name__} lacks {method}()")
    if not hasattr(drafter, "vocab_size"):
        raise ValueError(f"drafter {type(drafter).__name__} lacks vocab_size (None for a model-free drafter)")
    draft_vocab = drafter.vocab_size
    if draft_vocab is not None and draft_vocab != vocab_size:
        raise ValueError(f"drafter vocabulary mismatch: the drafter has {draft_vocab} tokens, the target "
                         f"{vocab_size}; draft and target must share one tokenizer")


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def check_context(prompt_length: int, max_new_tokens: int, max_length: int | None) -> None:
    """Refuse a request the model can never serve: prompt + max_new_tokens past its context."""
    if max_length is not None and prompt_length + max_new_tokens > max_length:
        room = max_length - prompt_length
        hint = f"at most {room}" if room > 0 else "a shorter prompt: the prompt alone fills it"
        raise ValueError(f"max_new_tokens={max_new_tokens} with a {prompt_length}-token prompt exceeds the "
                         f"target's context of {max_length} positions (max_position_embeddings); use {hint}")
