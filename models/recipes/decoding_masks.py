"""The logit masks decoding applies to an image or speech token model, from its adapter, for the recipes.

Target sampling and distillation must shape the target's distribution as decoding does, or a drafter
learns on sequences that decoding can never produce. The adapters own those masks, so they are read
from the adapters' own objects, not written again here: image models allow codes only
(``ImageModels.guided``), speech models one layout slot per position, eos only where a frame starts
and, in the aligned layout, only the prompt's phone indices and the phone each index names
(``SpeechModels.allowed``). Both return masks in the forms :func:`multispec.guidance.allowed_at` takes.
"""
from __future__ import annotations

from typing import Callable

import torch

from multispec.guidance import Mask


def prompt_masks(model: torch.nn.Module, meta: dict, prompts: list[torch.Tensor]) -> Mask:
    """The mask decoding applies after each of ``prompts`` (each [P_b], absolute positions from 0): one
    bool [V] shared by all (image), one function per prompt (speech), None for other models."""
    modality = meta.get("modality")
    if modality == "image":
        from modalities.image.generation import ImageModels
        return ImageModels(model, None, meta).guided(model, 1.0).allowed_tokens  # no VQ needed for the mask
    if modality == "speech":
        from modalities.speech.generation import SpeechModels
        speech = SpeechModels(model, None, meta)  # no codec needed for the masks
        return [speech.allowed(prompt.reshape(1, -1).cpu()) for prompt in prompts]
    return None


def speech_prompt(row: torch.Tensor) -> torch.Tensor:
    """The prompt [P] = [bos] text [sep] a speech training row [T] starts with."""
    from modalities.speech.vocab import SEP
    sep = (row == SEP).nonzero()
    if sep.shape[0] == 0:
        raise ValueError("a speech row without its [sep] token: cannot tell its prompt from its audio")
    return row[: int(sep[0, 0]) + 1]


def row_masks(model: torch.nn.Module, meta: dict) -> Callable[[torch.Tensor], Mask] | None:
    """For a distillation teacher: rows [B, T] ([condition] continuation) -> the mask decoding applies
    to each row (:func:`prompt_masks`); None for models without masks."""
    modality = meta.get("modality")
    if modality == "image":
        codes_only = prompt_masks(model, meta, [])
        return lambda rows: codes_only
    if modality == "speech":
        return lambda rows: prompt_masks(model, meta, [speech_prompt(row) for row in rows])
    return None
