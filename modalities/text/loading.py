"""Loading text models and tokenizers from local directories, with clear errors.

Weights load from safetensors only (never pickle). A draft's tokenizer must equal the target's.
"""
from __future__ import annotations

import pathlib

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def _checked_dir(path, what: str) -> pathlib.Path:
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise ValueError(f"{what}: {path} is not a directory (expected a save_pretrained folder)")
    if not (directory / "config.json").is_file():
        raise ValueError(f"{what}: {path} has no config.json (expected a save_pretrained folder)")
    if not any(directory.glob("*.safetensors")):
        raise ValueError(f"{what}: {path} has no .safetensors weights (pickle checkpoints are not loaded)")
    return directory


def load_model(path, what: str = "model", dtype: torch.dtype | None = None, device: str | None = None):
    """A causal LM from a local folder, in eval mode (fp32 on CPU unless ``dtype`` says otherwise)."""
    directory = _checked_dir(path, what)
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True,
                                                     dtype=dtype or torch.float32)
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{what}: could not load {path}: {error}") from error
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_tokenizer(path, what: str = "tokenizer"):
    directory = pathlib.Path(path)
    if not directory.is_dir():
        raise ValueError(f"{what}: {path} is not a directory")
    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as error:
        raise ValueError(f"{what}: could not load a tokenizer from {path}: {error}") from error


def check_same_tokenizer(target_tokenizer, draft_tokenizer) -> None:
    """Raise if the two tokenizers would map text to different ids."""
    if target_tokenizer.get_vocab() != draft_tokenizer.get_vocab():
        raise ValueError("draft tokenizer differs from the target's: speculative decoding needs one shared "
                         f"vocabulary ({len(draft_tokenizer)} vs {len(target_tokenizer)} tokens)")


def load_pair(target_path, draft_path=None, device: str | None = None, dtype: torch.dtype | None = None,
              draft_dtype: torch.dtype | None = None):
    """(target, draft or None, tokenizer) from folders; the tokenizer comes from the target's folder.
    The draft is loaded in ``draft_dtype`` (default: ``dtype``): a bf16 draft proposes for an fp32
    target at half the draft cost, and the target's verification keeps the output exact."""
    target = load_model(target_path, "target", dtype, device)
    tokenizer = load_tokenizer(target_path, "target tokenizer")
    draft = None
    if draft_path is not None:
        draft = load_model(draft_path, "draft", draft_dtype or dtype, device)
        if any(pathlib.Path(draft_path).glob("tokenizer*.json")):
            check_same_tokenizer(tokenizer, load_tokenizer(draft_path, "draft tokenizer"))
    return target, draft, tokenizer
