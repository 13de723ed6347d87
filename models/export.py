"""Drafters trained here, written in the formats serving engines load (``multispec export``).

- A draft model: a plain Hugging Face checkpoint (safetensors + tokenizer); vLLM ``draft_model``,
  SGLang ``STANDALONE``.
- An EAGLE head in EAGLE-3's layout (``EagleHead`` with ``input: eagle3``, e.g. trained with
  ``--layout eagle3``):
  - ``eagle3``: the EAGLE-3 checkpoint vLLM and SGLang read (``LlamaForCausalLMEagle3``; weights
    ``midlayer.*``, ``fc.weight``, ``norm.weight``, ``lm_head.weight`` and, for a reduced draft
    vocabulary, ``d2t`` as offsets: target id = draft id + d2t[draft id]; the target's embedding is
    shared by the engine, so it is not written);
  - ``speculators``: the format of PyPI ``speculators`` (0.9.0; ``speculators_model_type: eagle3``,
    ``layers.0.*``, ``embed_tokens``, ``t2d``), which vLLM also reads.
  Only the layout is portable: heads of the other layouts are refused by name.
- Medusa heads: vLLM's Medusa layout (``blocks.{k}.layers.0.{weight,bias}``, ``lm_heads.{k}.weight``)
  over the full vocabulary (vLLM's per-head LM heads have the target's width).

:func:`serving_commands` prints the matching vLLM ``speculative_config`` and SGLang flags.
Knows nothing about decoding or training.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.feature_heads import EagleHead, MedusaHead, eagle3_layers

SPECULATORS_VERSION = "0.9.0"


def _write(out, config: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _target_layers(target) -> int:
    config = target.config.get_text_config() if hasattr(target.config, "get_text_config") else target.config
    return int(config.num_hidden_layers)


def _check_eagle3(head: EagleHead, target) -> None:
    if not isinstance(head, EagleHead) or not head.eagle3:
        layout = head.settings.get("input", "concat") if isinstance(head, EagleHead) else type(head).__name__
        raise ValueError(f"only heads in EAGLE-3's layout export to vLLM, SGLang and speculators; this head's "
                         f"layout is {layout!r}: train one with `python -m models.recipes.feature eagle --layout eagle3`")
    depth = _target_layers(target)
    if any(not 0 <= layer < depth for layer in head.feature_layers):
        raise ValueError(f"EAGLE-3 reads the inputs of target layers 0..{depth - 1}; this head reads "
                         f"{list(head.feature_layers)}")


def _layer_config(head: EagleHead) -> dict:
    s = head.settings
    return {"model_type": "llama", "hidden_size": s["hidden_size"], "intermediate_size": s["intermediate_size"],
            "num_hidden_layers": 1, "num_attention_heads": s["num_attention_heads"],
            "num_key_value_heads": s.get("num_key_value_heads", s["num_attention_heads"]),
            "head_dim": s.get("head_dim", s["hidden_size"] // s["num_attention_heads"]), "hidden_act": "silu",
            "rms_norm_eps": s["rms_norm_eps"], "max_position_embeddings": s["max_position_embeddings"],
            "rope_theta": s["rope_theta"], "rope_parameters": {"rope_type": "default", "rope_theta": s["rope_theta"]},
            "attention_bias": False, "mlp_bias": False, "vocab_size": head.vocab_size,
            "tie_word_embeddings": False}


def eagle3_tensors(head: EagleHead, target, speculators: bool = False) -> dict[str, torch.Tensor]:
    """The head's tensors under the format's names (``speculators``: its names, else EAGLE-3's)."""
    _check_eagle3(head, target)
    prefix = "layers.0." if speculators else "midlayer."
    state = head.state_dict()
    tensors = {prefix + k[len("decoder.layers.0."):]: v for k, v in state.items() if k.startswith("decoder.layers.0.")}
    tensors.update({"fc.weight": state["fc.weight"], "norm.weight": state["norm.weight"],
                    "lm_head.weight": state["lm_head.weight"]})
    draft_vocab = head.d2t.shape[0]
    if draft_vocab < head.vocab_size:
        tensors["d2t"] = head.d2t - torch.arange(draft_vocab)  # offsets: target id = draft id + d2t[draft id]
        if speculators:
            t2d = torch.zeros(head.vocab_size, dtype=torch.bool)
            t2d[head.d2t] = True
            tensors["t2d"] = t2d
    if speculators:
        tensors["embed_tokens.weight"] = target.get_input_embeddings().weight.detach()
    return tensors


def export_eagle3(head: EagleHead, target, out, target_name: str, speculators: bool = False,
                  num_speculative_tokens: int = 3, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write ``head`` as an EAGLE-3 checkpoint (vLLM, SGLang) or in the speculators format."""
    tensors = eagle3_tensors(head, target, speculators)
    layer = _layer_config(head)
    layers = list(head.feature_layers)
    default = list(eagle3_layers(_target_layers(target))) == layers
    common = {"draft_vocab_size": int(head.d2t.shape[0]), "target_hidden_size": head.settings["target_hidden_size"],
              "norm_before_residual": False, "torch_dtype": str(dtype).removeprefix("torch.")}
    if speculators:
        config = {"speculators_model_type": "eagle3", "architectures": ["Eagle3DraftModel"],
                  "transformer_layer_config": layer, **common, "eagle_aux_hidden_state_layer_ids": layers,
                  "speculators_version": SPECULATORS_VERSION,
                  "speculators_config": {
                      "algorithm": "eagle3",
                      "proposal_methods": [{"proposal_type": "greedy",
                                            "speculative_tokens": num_speculative_tokens}],
                      "default_proposal_method": "greedy",
                      "verifier": {"name_or_path": target_name,
                                   "architectures": list(getattr(target.config, "architectures", None) or [])}}}
    else:
        config = {**layer, "architectures": ["LlamaForCausalLMEagle3"], **common}
        if not default:  # vLLM reads the top-level key; SGLang would read ids inside eagle_config off by one
            config["eagle_aux_hidden_state_layer_ids"] = layers
    return _write(out, config, tensors, dtype)


def export_medusa(head: MedusaHead, out, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write Medusa heads in vLLM's layout (full-vocabulary heads only)."""
    if not isinstance(head, MedusaHead):
        raise ValueError(f"expected Medusa heads (models.feature_heads.MedusaHead), got {type(head).__name__}")
    vocab = head.settings["vocab_size"]
    if head.d2t.shape[0] != vocab or not bool((head.d2t == torch.arange(vocab)).all()):
        raise ValueError(f"vLLM's Medusa heads cover the full vocabulary ({vocab} tokens); these heads draft from "
                         f"{head.d2t.shape[0]}: train them with --draft-vocab {vocab}")
    tensors = {}
    for k, (block, lm) in enumerate(zip(head.blocks, head.lm_heads)):
        tensors[f"blocks.{k}.layers.0.weight"] = block.weight.detach()
        tensors[f"blocks.{k}.layers.0.bias"] = block.bias.detach()
        tensors[f"lm_heads.{k}.weight"] = lm.weight.detach()
    config = {"model_type": "medusa", "architectures": ["MedusaModel"], "hidden_size": head.settings["hidden_size"],
              "vocab_size": vocab, "num_heads": len(head.blocks), "num_hidden_layers": 1, "medusa_fc_bias": True,
              "truncated_vocab_size": vocab, "torch_dtype": str(dtype).removeprefix("torch.")}
    return _write(out, config, tensors, dtype)


def export_draft_model(model, tokenizer, out) -> Path:
    """A draft model as the plain Hugging Face checkpoint engines load (safetensors + tokenizer)."""
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def serving_commands(kind: str, target: str, draft: str, num_speculative_tokens: int = 3) -> str:
    """The vLLM and SGLang command lines that serve ``target`` with the exported drafter ``draft``."""
    method = {"eagle3": "eagle3", "speculators": "eagle3", "medusa": "medusa", "draft": "draft_model"}[kind]
    spec = json.dumps({"method": method, "model": str(draft), "num_speculative_tokens": num_speculative_tokens})
    lines = [f"vllm serve {target} --speculative-config '{spec}'",
             f"# offline: LLM(model='{target}', speculative_config={spec})"]
    if kind == "eagle3":
        lines.append(f"python -m sglang.launch_server --model-path {target} --speculative-algorithm EAGLE3 "
                     f"--speculative-draft-model-path {draft} --speculative-num-steps {num_speculative_tokens} "
                     f"--speculative-eagle-topk 4 --speculative-num-draft-tokens 16")
    elif kind == "draft":
        lines.append(f"python -m sglang.launch_server --model-path {target} --speculative-algorithm STANDALONE "
                     f"--speculative-draft-model-path {draft} --speculative-num-steps {num_speculative_tokens} "
                     f"--speculative-eagle-topk 1 --speculative-num-draft-tokens {num_speculative_tokens + 1}")
    else:
        lines.append(f"# SGLang: no {'Medusa' if kind == 'medusa' else 'speculators-format'} loader; "
                     f"use the {'eagle3 export' if kind == 'speculators' else 'vLLM command'}")
    return "\n".join(lines)
