"""Text in, text out: prompts through the tokenizer (and chat template), the core loop, streamed text out."""
from __future__ import annotations

from typing import Iterator

import torch

import multispec
from multispec.drafters import DraftModel, Jacobi, LayerSkip, PromptLookup
from multispec.lm import output_vocab_size

METHODS = ("plain", "draft", "lookup", "layerskip", "jacobi")


def make_drafter(method: str, target, draft=None, layerskip_layers: int | None = None, **drafter_kwargs):
    """The drafter for a method name: plain | draft | lookup | layerskip | jacobi."""
    if method == "plain":
        return None
    if method == "draft":
        if draft is None:
            raise ValueError("method 'draft' needs a draft model (--draft PATH)")
        return DraftModel(draft, **drafter_kwargs)
    if method == "lookup":
        return PromptLookup(**drafter_kwargs)
    if method == "layerskip":
        layers = layerskip_layers or max(1, target.config.num_hidden_layers // 4)
        return LayerSkip(target, layers, **drafter_kwargs)
    if method == "jacobi":
        return Jacobi(output_vocab_size(target), **drafter_kwargs)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def encode_prompt(prompt: str, tokenizer, chat: bool | None = None) -> torch.Tensor:
    """Prompt text -> input ids [1, T]; uses the chat template when the tokenizer has one (chat=None)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True but the tokenizer has no chat template")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("prompt encodes to no tokens")
    return ids


class TextStream:
    """Iterate for text pieces as the tokens are accepted; ``stats`` holds the run's DecodingStats."""

    def __init__(self, steps, tokenizer):
        self._steps, self._tokenizer = steps, tokenizer
        self.stats = None
        self.token_ids: list[int] = []

    def __iter__(self) -> Iterator[str]:
        shown = ""
        for step in self._steps:
            self.stats = step.stats
            self.token_ids.extend(step.tokens.tolist())
            text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next bytes
                continue
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown):]
            shown = text
        text = self._tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):]


def stream_text(prompt: str, target, tokenizer, drafter=None, *, chat: bool | None = None,
                stop_at_eos: bool = True, **generate_kwargs) -> TextStream:
    """Stream the continuation of ``prompt``; keyword arguments go to :func:`multispec.stream`.

    ``stop_at_eos`` passes the tokenizer's eos id (the core itself never reads one from a config).
    """
    input_ids = encode_prompt(prompt, tokenizer, chat).to(next(target.parameters()).device)
    if stop_at_eos and tokenizer.eos_token_id is not None:
        generate_kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    return TextStream(multispec.stream(target, input_ids, drafter=drafter, **generate_kwargs), tokenizer)


def generate_text(prompt: str, target, tokenizer, drafter=None, **kwargs):
    """(text, stats): the whole continuation of ``prompt`` (see :func:`stream_text`)."""
    stream = stream_text(prompt, target, tokenizer, drafter, **kwargs)
    text = "".join(stream)
    return text, stream.stats
