"""Deepen a trained Llama-family model by block expansion: the grown model starts as the same function.

    python -m models.recipes.surgery.grow_layers SRC_DIR OUT.safetensors --layers 8

After every ``layers / old`` -th original decoder layer a copy of that layer is inserted whose two
output projections (attention ``o_proj`` and MLP ``down_proj``) are zero, so the new block adds
nothing to the residual stream and the grown model computes exactly what the source did (LLaMA
Pro's block expansion, Wu et al. 2024). Training then uses the new blocks. The output is a
safetensors file of the grown shape for ``models.recipes.train ... --init-from``.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from safetensors.torch import save_model


def grow(model: torch.nn.Module, layers: int) -> torch.nn.Module:
    """A deep copy of ``model`` (``model.model.layers``) with ``layers`` decoder layers in all."""
    old = len(model.model.layers)
    if layers <= old or layers % old:
        raise ValueError(f"--layers must be a multiple of the source's {old} layers and larger, got {layers}")
    grown = copy.deepcopy(model)
    blocks = []
    for layer in grown.model.layers:
        blocks.append(layer)
        for _ in range(layers // old - 1):
            twin = copy.deepcopy(layer)
            torch.nn.init.zeros_(twin.self_attn.o_proj.weight)
            torch.nn.init.zeros_(twin.mlp.down_proj.weight)
            blocks.append(twin)
    return set_layers(grown, blocks)


def set_layers(model: torch.nn.Module, blocks: list[torch.nn.Module]) -> torch.nn.Module:
    """Give ``model`` these decoder layers (renumbered for the cache) and a config that agrees."""
    for i, block in enumerate(blocks):
        block.self_attn.layer_idx = i  # the cache slot each layer writes
    model.model.layers = torch.nn.ModuleList(blocks)
    model.config.num_hidden_layers = len(blocks)
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = [model.config.layer_types[0]] * len(blocks)
    return model


def main(argv: list[str] | None = None) -> None:
    from models.zoo import load_token_lm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a model folder (safetensors + multispec.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, required=True)
    args = ap.parse_args(argv)
    model, _ = load_token_lm(args.source, torch.float32)
    grown = grow(model, args.layers)
    ids = torch.randint(4, model.config.vocab_size, (1, 64))
    with torch.no_grad():
        gap = (grown(ids).logits - model(ids).logits).abs().max().item()
    if gap > 1e-4:
        raise SystemExit(f"grown model differs from the source by {gap:.2e}: not an identity expansion")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(grown, str(args.out))
    print(f"{args.source} ({len(model.model.layers)} layers) -> {args.out} ({args.layers} layers), "
          f"max logit gap {gap:.1e}")


if __name__ == "__main__":
    main()
