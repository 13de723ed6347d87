"""Every difference between the supported transformers versions, in one place.

Supported: transformers 5.17 up to the newest release tested (see pyproject.toml). Known differences:
- the forward's cache argument is ``past_key_values`` up to 5.23 and ``cache`` from 5.24 on (5.24 warns
  on the old name);
- ``Cache.crop`` took a final length (positive int) in early 5.x and takes the number of tokens to remove
  (negative int) later; a negative int means "remove that many" in every supported version, so that is
  the only form used here;
- sliding-window cache layers drop old states unless past recording is switched on, and 5.17's
  recording layers misbehave across consecutive forwards; so caches here keep every position (see
  :func:`new_cache`).
"""
from __future__ import annotations

import copy

import functools
import inspect

import torch
from transformers import DynamicCache


@functools.lru_cache(maxsize=None)
def _forward_parameters(model_class: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the forward argument that takes the KV cache for this model class."""
    return "cache" if "cache" in _forward_parameters(type(model)) else "past_key_values"


def accepts_kwarg(model: torch.nn.Module, name: str) -> bool:
    """Whether this model class's forward takes ``name`` (e.g. ``logits_to_keep``)."""
    return name in _forward_parameters(type(model))


def new_cache(model: torch.nn.Module) -> DynamicCache:
    """A fresh dynamic cache whose every layer keeps all positions, so any step can be rolled back.

    Built without the model config on purpose: with a config, sliding-window layers drop old states
    (5.17 keeps them only with past recording on, and then returns over-long states when several
    forwards run without a crop in between, as a drafter does). Full layers with the model's own
    sliding-window attention mask give the same logits in every supported version.
    """
    return DynamicCache()


def crop_cache(cache: DynamicCache, tokens_to_remove: int) -> None:
    """Drop the newest ``tokens_to_remove`` positions (0 still trims sliding-window layers)."""
    if tokens_to_remove < 0:
        raise ValueError(f"tokens_to_remove must be >= 0, got {tokens_to_remove}")
    cache.crop(-tokens_to_remove)


def hf_greedy_config(model, max_new_tokens: int, **kwargs):
    """A copy of ``model``'s generation config for Hugging Face greedy decoding that matches multispec's:
    exactly ``max_new_tokens`` (no eos stop), no sampling settings; the reference of the tests and benches."""
    config = copy.deepcopy(model.generation_config)
    # eos None would fall back to the model default; -1 is an id no model emits, so HF never stops early
    config.update(**{**dict(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=-1, pad_token_id=0,
                            temperature=None, top_k=None, top_p=None), **kwargs})
    return config


def tree_attention(model: torch.nn.Module, prefix_length: int, parents: torch.Tensor, dtype: torch.dtype,
                   queries: int | None = None):
    """(attention_mask, position_ids [1, m]) for feeding the last m = ``queries`` (default: all) nodes
    of a tree whose earlier nodes are already cached right after ``prefix_length`` shared tokens; node
    i follows node ``parents[i]`` (−1: the shared prefix). Each node sees the prefix, its ancestors
    and itself, at position prefix_length − 1 + its depth.

    The mask is the custom 4D form transformers returns as-is: float [1, 1, m, prefix + m] with 0 where
    attention is allowed and the dtype's minimum elsewhere (eager attention adds it; a 0/1 float mask
    would be silently wrong, and no row is fully masked, which gives NaN in SDPA). The model's sliding
    window is applied; models with both full and sliding layers (``layer_types``) get one mask per
    layer type.
    """
    from . import trees

    device = parents.device
    m = parents.shape[0] if queries is None else queries
    node_positions = trees.positions(parents, prefix_length)
    query_positions = node_positions[parents.shape[0] - m:]
    key_positions = torch.cat([torch.arange(prefix_length, device=device), node_positions])
    allowed = torch.cat([torch.ones(m, prefix_length, dtype=torch.bool, device=device),
                         trees.ancestor_mask(parents)[parents.shape[0] - m:]], dim=1)
    mask = attention_masks(model, allowed[None], query_positions[None], key_positions[None], dtype)
    return mask, query_positions[None]


def attention_masks(model: torch.nn.Module, allowed: torch.Tensor, query_positions: torch.Tensor,
                    key_positions: torch.Tensor, dtype: torch.dtype):
    """The custom 4D attention mask(s) for ``allowed`` [B, n, K] (query i may see key j), with the
    model's sliding window applied from the positions [B, n] and [B, K]: float [B, 1, n, K], 0 where
    attention is allowed and the dtype's minimum elsewhere, or one such mask per ``layer_types`` kind.
    No row may be fully masked (SDPA gives NaN)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config

    def additive(mask: torch.Tensor) -> torch.Tensor:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min)[:, None]

    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    windowed = None if not window else \
        allowed & (query_positions[:, :, None] - key_positions[:, None, :] < window)
    if layer_types is not None:
        kinds = set(layer_types)
        if "sliding_attention" not in kinds or windowed is None:
            return additive(allowed)
        if kinds == {"sliding_attention"}:
            return additive(windowed)
        return {"full_attention": additive(allowed), "sliding_attention": additive(windowed)}
    return additive(allowed if windowed is None else windowed)


def keep_cache_positions(cache: DynamicCache, positions: torch.Tensor) -> None:
    """Keep only the cached positions ``positions`` [k] (ascending), in that order, in every layer:
    after a tree step, the prefix and the accepted path. Reads ``DynamicLayer.keys``/``.values``."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", True) and getattr(layer, "keys", None) is not None:
            index = positions.to(layer.keys.device)
            layer.keys = layer.keys.index_select(-2, index)
            layer.values = layer.values.index_select(-2, index)


def gather_cache_slots(cache: DynamicCache, index: torch.Tensor) -> None:
    """Row b of every layer keeps the cached slots ``index[b]`` ([B, M]), in that order (batched
    decoding compacts its ragged cache with it)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", True) and getattr(layer, "keys", None) is not None:
            keys = layer.keys
            full = index.to(keys.device)[:, None, :, None].expand(keys.shape[0], keys.shape[1], -1, keys.shape[3])
            layer.keys = keys.gather(2, full)
            layer.values = layer.values.gather(2, full)
