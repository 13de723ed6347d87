"""The trained feature heads behind :mod:`multispec.feature_drafters`: EAGLE-style and Medusa.

EAGLE-style (:class:`EagleHead`, drafter ``Eagle``):

Input at position i: the target's token embedding of token i + 1 (the target's own embedding table,
frozen and not saved) and a hidden state: for committed positions the target's features from a few
layers fused by ``fc`` (EAGLE-3 reads the inputs of layers 2, L/2 and L − 3), past them the head's
own output. The two are normalised, concatenated and mapped 2H -> H (``combine``), then run through
one transformers Llama decoder layer (with its KV cache) and an LM head over a reduced draft
vocabulary; ``d2t`` holds each draft row's target id.

Medusa (:class:`MedusaHead`, drafter ``Medusa``; Cai et al. 2024): K heads on the target's final
normed hidden state; head k (1..K) is a residual block x + SiLU(W_k x + b_k), zero-initialised so it
starts as the identity, and an LM head over the draft vocabulary (rows initialised from the target's
output embedding). Applied to the feature at position i, head k predicts the token at i + 1 + k.

Both are saved as ``config.json`` (with a ``format`` field) + ``model.safetensors`` and loaded
against a target (:func:`load_head`, :func:`load_medusa`), refusing mismatches with clear errors.
Knows nothing about decoding or training.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

from multispec import compat

FORMAT = "multispec-eagle-v1"
MEDUSA_FORMAT = "multispec-medusa-v1"


def default_feature_layers(num_layers: int) -> tuple[int, ...]:
    """EAGLE-3's low, middle and high layers (the hidden states entering layers 2, L // 2 and L − 3)
    plus the final normed output L that EAGLE-1 reads (distinct, in order): with a training budget of
    minutes the top features, which already hold the target's next-token prediction, teach fastest."""
    return tuple(sorted({min(2, num_layers - 1), num_layers // 2, max(0, num_layers - 3), num_layers}))


class Eagle3Layer(LlamaDecoderLayer):
    """EAGLE-3's first draft layer, the layout vLLM and SGLang load: its input is [embedding; hidden]
    (2H); attention reads [input_layernorm(embedding); hidden_norm(hidden)] through 2H-wide q/k/v
    projections, and the residual stream starts from the raw hidden state."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config, 0)
        hidden, attn = config.hidden_size, self.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            old = getattr(attn, name)
            setattr(attn, name, torch.nn.Linear(2 * hidden, old.out_features, bias=old.bias is not None))
        self.hidden_norm = LlamaRMSNorm(hidden, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        embedded, hidden = hidden_states.chunk(2, dim=-1)
        x = torch.cat([self.input_layernorm(embedded), self.hidden_norm(hidden)], dim=-1)
        attended, _ = self.self_attn(hidden_states=x, **kwargs)
        residual = hidden + attended
        return residual + self.mlp(self.post_attention_layernorm(residual))


class EagleHead(torch.nn.Module):
    """``settings["input"]``: ``concat`` (the default) maps [norm(embedding); norm(hidden)] 2H -> H;
    ``residual`` adds a zero-initialised H -> H map of norm(hidden) to the embedding, so a head
    warm-started from a one-layer draft LM (``own_embedding``: its own token table, saved with the
    head) starts out as exactly that draft model and learns to use the target's features from there;
    ``eagle3`` is EAGLE-3's own layout (:class:`Eagle3Layer`, a final ``norm`` before the LM head, the
    pre-norm output fed back), the one ``models.export`` writes for vLLM, SGLang and speculators."""

    def __init__(self, settings: dict, embed: torch.nn.Embedding):
        super().__init__()
        self.settings = dict(settings)
        hidden = settings["hidden_size"]
        self.feature_layers = tuple(settings["feature_layers"])
        self.vocab_size = settings["vocab_size"]
        layout = settings.get("input", "concat")
        if layout not in ("concat", "residual", "eagle3"):
            raise ValueError(f"EagleHead input layout must be concat, residual or eagle3, got {layout!r}")
        self.residual, self.eagle3 = layout == "residual", layout == "eagle3"
        self.own_embedding = bool(settings.get("own_embedding", False))
        self.embed = torch.nn.Embedding(self.vocab_size, hidden) if self.own_embedding else embed
        self.fc = torch.nn.Linear(settings["target_hidden_size"] * len(self.feature_layers), hidden, bias=False)
        if self.eagle3:
            pass
        elif self.residual:
            self.hidden_norm = LlamaRMSNorm(hidden, eps=settings["rms_norm_eps"])
            self.combine = torch.nn.Linear(hidden, hidden, bias=False)
            torch.nn.init.zeros_(self.combine.weight)
        else:
            self.hidden_norm = LlamaRMSNorm(hidden, eps=settings["rms_norm_eps"])
            self.embed_norm = LlamaRMSNorm(hidden, eps=settings["rms_norm_eps"])
            self.combine = torch.nn.Linear(2 * hidden, hidden, bias=False)
        self.config = LlamaConfig(vocab_size=1, hidden_size=hidden, intermediate_size=settings["intermediate_size"],
                                  num_hidden_layers=1, num_attention_heads=settings["num_attention_heads"],
                                  num_key_value_heads=settings.get("num_key_value_heads", settings["num_attention_heads"]),
                                  head_dim=settings.get("head_dim", hidden // settings["num_attention_heads"]),
                                  max_position_embeddings=settings["max_position_embeddings"],
                                  rms_norm_eps=settings["rms_norm_eps"],
                                  rope_parameters={"rope_type": "default", "rope_theta": settings["rope_theta"]},
                                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
        self.decoder = LlamaModel(self.config)
        if self.eagle3:  # the decoder returns the pre-norm stream (fed back); the head norms it for logits
            self.decoder.layers[0] = Eagle3Layer(self.config)
            self.decoder.norm = torch.nn.Identity()
            self.norm = LlamaRMSNorm(hidden, eps=settings["rms_norm_eps"])
        self.lm_head = torch.nn.Linear(hidden, settings["draft_vocab_size"], bias=False)
        self.register_buffer("d2t", torch.arange(settings["draft_vocab_size"]), persistent=True)

    @property
    def draft_to_target(self) -> torch.Tensor:
        return self.d2t

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features.to(self.fc.weight.dtype))

    def new_cache(self) -> DynamicCache:
        return DynamicCache()

    def step(self, tokens, inputs, cache, position_ids, attention_mask=None):
        """tokens [B, n], inputs [B, n, H] -> (draft logits [B, n, Vd], hidden [B, n, H]); appends to cache."""
        embedded = self.embed(tokens).to(inputs.dtype)
        if self.eagle3:
            x = torch.cat([embedded, inputs], dim=-1)
        elif self.residual:
            x = embedded + self.combine(self.hidden_norm(inputs))
        else:
            x = self.combine(torch.cat([self.embed_norm(embedded), self.hidden_norm(inputs)], dim=-1))
        cache_kwargs = {} if cache is None else {compat.cache_kwarg(self.decoder): cache, "use_cache": True}
        out = self.decoder(inputs_embeds=x, **cache_kwargs,
                           position_ids=position_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state
        return self.lm_head(self.norm(hidden) if self.eagle3 else hidden), hidden

    def borrowed(self, key: str) -> bool:
        """A tensor that is not saved: the target's embedding (unless the head has its own) and the
        decoder's unused 1-row table."""
        return (key.startswith("embed.") and not self.own_embedding) or key == "decoder.embed_tokens.weight"

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor but the borrowed ones."""
        return {k: v for k, v in self.state_dict().items() if not self.borrowed(k)}

    def save(self, folder: Path, card: dict | None = None) -> None:
        _save(folder, FORMAT, self.settings, self.trainable_state(), card)


def settings_for(target: torch.nn.Module, draft_vocab_size: int, feature_layers=None) -> dict:
    """Head settings sized like one layer of ``target`` (a transformers causal LM)."""
    config = _text_config(target)
    layers = feature_layers or default_feature_layers(config.num_hidden_layers)
    heads = config.num_attention_heads
    return {"hidden_size": config.hidden_size, "target_hidden_size": config.hidden_size,
            "intermediate_size": getattr(config, "intermediate_size", 4 * config.hidden_size),
            "num_attention_heads": heads, "feature_layers": list(layers),
            "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
            "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
            "vocab_size": int(target.get_output_embeddings().weight.shape[0]),
            "draft_vocab_size": draft_vocab_size,
            "max_position_embeddings": getattr(config, "max_position_embeddings", 2048) or 2048,
            "rms_norm_eps": getattr(config, "rms_norm_eps", 1e-6), "rope_theta": 10000.0,
            "target_layers": config.num_hidden_layers}


def eagle3_layers(num_layers: int) -> tuple[int, ...]:
    """The target layers EAGLE-3 reads by default in vLLM and SGLang: the inputs of layers 2, L // 2, L − 3."""
    return tuple(sorted({min(2, num_layers - 1), num_layers // 2, max(0, num_layers - 3)}))


def eagle3_settings_for(target: torch.nn.Module, draft_vocab_size: int) -> dict:
    """Settings of a head in EAGLE-3's own layout, reading the layers the serving engines tap by default."""
    layers = eagle3_layers(_text_config(target).num_hidden_layers)
    return {**settings_for(target, draft_vocab_size, layers), "input": "eagle3"}


def load_head(folder, target: torch.nn.Module) -> EagleHead:
    """The head saved in ``folder``, reading ``target``'s embedding (safetensors only; clear errors)."""
    settings, weights = _read(folder, FORMAT, "an EAGLE head", target)
    keys = ("hidden_size", "target_hidden_size", "intermediate_size", "num_attention_heads", "feature_layers",
            "vocab_size", "draft_vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta",
            "target_layers")
    optional = ("num_key_value_heads", "head_dim", "input", "own_embedding")
    head = EagleHead({k: settings[k] for k in keys + optional if k in settings}, target.get_input_embeddings())
    return _fill(head, weights, target, borrowed=head.borrowed)


def settings_from_draft(target: torch.nn.Module, draft: torch.nn.Module, feature_layers=None) -> dict:
    """Settings of a ``residual`` head shaped like ``draft``, a one-layer causal LM with the target's
    vocabulary, whose weights :func:`models.recipes.feature.eagle.warm_start_from_draft` copies."""
    config, target_config = _text_config(draft), _text_config(target)
    if config.num_hidden_layers != 1:
        raise ValueError(f"a head is warm-started from a one-layer draft model; this one has "
                         f"{config.num_hidden_layers} layers")
    vocab = int(target.get_output_embeddings().weight.shape[0])
    if int(draft.get_output_embeddings().weight.shape[0]) != vocab:
        raise ValueError("the draft model's vocabulary differs from the target's")
    settings = settings_for(draft, vocab, feature_layers or default_feature_layers(target_config.num_hidden_layers))
    rope = getattr(config, "rope_parameters", None) or {}
    return {**settings, "target_hidden_size": target_config.hidden_size, "target_layers": target_config.num_hidden_layers,
            "rope_theta": rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)),
            "input": "residual", "own_embedding": True}


class MedusaHead(torch.nn.Module):
    """K Medusa heads over the target's final hidden state (``hidden_states[L]``)."""

    def __init__(self, settings: dict):
        super().__init__()
        self.settings = dict(settings)
        hidden, heads = settings["hidden_size"], settings["num_heads"]
        self.feature_layers = (settings["target_layers"],)
        self.vocab_size = settings["vocab_size"]
        self.num_heads = heads
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(heads))
        for block in self.blocks:  # each head starts as the identity on the feature
            torch.nn.init.zeros_(block.weight)
            torch.nn.init.zeros_(block.bias)
        self.lm_heads = torch.nn.ModuleList(torch.nn.Linear(hidden, settings["draft_vocab_size"], bias=False)
                                            for _ in range(heads))
        self.register_buffer("d2t", torch.arange(settings["draft_vocab_size"]), persistent=True)

    @property
    def draft_to_target(self) -> torch.Tensor:
        return self.d2t

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature [..., F] -> draft logits [K, ..., Vd] (head k's row predicts the token k + 1 further on)."""
        x = feature.to(self.blocks[0].weight.dtype)
        return torch.stack([lm(x + torch.nn.functional.silu(block(x)))
                            for block, lm in zip(self.blocks, self.lm_heads)])

    def predict(self, feature: torch.Tensor) -> torch.Tensor:
        """feature [n, F] -> draft logits [K, n, Vd]."""
        return self(feature)

    def warm_start(self, target: torch.nn.Module) -> None:
        """Each head's LM head rows from the target's output embedding rows ``d2t``."""
        rows = target.get_output_embeddings().weight.data[self.d2t.to(target.get_output_embeddings().weight.device)]
        for lm in self.lm_heads:
            lm.weight.data.copy_(rows.to(lm.weight))

    def save(self, folder: Path, card: dict | None = None) -> None:
        _save(folder, MEDUSA_FORMAT, self.settings, self.state_dict(), card)


def medusa_settings_for(target: torch.nn.Module, num_heads: int, draft_vocab_size: int) -> dict:
    """Settings of ``num_heads`` Medusa heads on ``target`` (a transformers causal LM)."""
    config = _text_config(target)
    vocab = int(target.get_output_embeddings().weight.shape[0])
    return {"hidden_size": config.hidden_size, "num_heads": num_heads, "vocab_size": vocab,
            "draft_vocab_size": min(draft_vocab_size, vocab), "target_layers": config.num_hidden_layers}


def load_medusa(folder, target: torch.nn.Module) -> MedusaHead:
    """The Medusa heads saved in ``folder`` for ``target`` (safetensors only; clear errors)."""
    settings, weights = _read(folder, MEDUSA_FORMAT, "a Medusa head", target)
    config = _text_config(target)
    if (settings["hidden_size"], settings["target_layers"]) != (config.hidden_size, config.num_hidden_layers):
        raise ValueError(f"the Medusa heads in {folder} read a {settings['hidden_size']}-wide feature after "
                         f"{settings['target_layers']} layers; the target has {config.hidden_size} and "
                         f"{config.num_hidden_layers}")
    keys = ("hidden_size", "num_heads", "vocab_size", "draft_vocab_size", "target_layers")
    return _fill(MedusaHead({k: settings[k] for k in keys}), weights, target, borrowed=lambda k: False)


def _text_config(target: torch.nn.Module):
    return target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config


def _save(folder, format_name: str, settings: dict, tensors: dict, card: dict | None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"format": format_name, **settings, **(card or {})}, indent=2))


def _read(folder, format_name: str, what: str, target: torch.nn.Module) -> tuple[dict, Path]:
    """(settings, weights path) of the head folder, checked for its files, format and vocabulary."""
    folder = Path(folder)
    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise ValueError(f"{folder} is not {what} folder (needs config.json and model.safetensors)")
    settings = json.loads(config_path.read_text())
    if settings.get("format") != format_name:
        raise ValueError(f"{config_path}: format {settings.get('format')!r}, expected {format_name!r}")
    vocab = int(target.get_output_embeddings().weight.shape[0])
    if settings["vocab_size"] != vocab:
        raise ValueError(f"the head in {folder} was trained for a vocabulary of {settings['vocab_size']}, "
                         f"the target has {vocab}")
    return settings, weights


def _fill(head: torch.nn.Module, weights: Path, target: torch.nn.Module, borrowed) -> torch.nn.Module:
    """``head`` with the saved tensors (all but the ``borrowed`` ones), in the target's dtype and device, eval."""
    missing, unexpected = head.load_state_dict(load_file(str(weights)), strict=False)
    missing = [k for k in missing if not borrowed(k)]
    if missing or unexpected:
        raise ValueError(f"{weights}: missing {missing}, unexpected {unexpected}")
    parameter = next(target.parameters())
    return head.to(dtype=parameter.dtype, device=parameter.device).eval()
