"""Start a drafter from some of the target's own decoder layers, its embeddings, final norm and head.

    python -m models.recipes.surgery.layer_subset SRC_DIR OUT.safetensors --keep 0,11 [--data runs/speech2/ar]

A shallow copy of a trained Llama-family model keeping only the listed layers (in order) is a
drafter of the target's width that already shares its token geometry; distillation then fits the
missing depth (``models.recipes.train speech --which draft --draft-shape H,L,heads,I --draft-init-from
OUT``). Self-speculative drafters (Draft & Verify, Zhang et al. 2024; LayerSkip, Elhoushi et al.
2024) skip layers at draft time; here the kept layers become a separate, trainable model. With
``--data`` the held-out losses of the source and of the untrained subset are printed, to compare
candidate ``--keep`` lists before training one.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_model

from models.recipes.surgery.grow_layers import set_layers


def keep_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """A deep copy of ``model`` (``model.model.layers``) with only the layers ``keep``, in order."""
    depth = len(model.model.layers)
    if not keep or len(set(keep)) != len(keep) or any(not 0 <= i < depth for i in keep):
        raise ValueError(f"--keep needs distinct layer indices in [0, {depth}), got {keep}")
    subset = copy.deepcopy(model)
    return set_layers(subset, [subset.model.layers[i] for i in keep])


def heldout_losses(models: list[torch.nn.Module], data_dir: Path) -> list[float]:
    """Each model's held-out loss per scored token on a ``models.*_tokens`` data set, read once
    (as training measures it)."""
    from models.recipes.token_lm import SequenceData
    from models.recipes.presets import TrainSpec
    from models.recipes.trainer import evaluate

    meta = json.loads((data_dir / "meta.json").read_text())
    spec = TrainSpec(max_steps=1, batch_size=8, seq_len=meta["seq_len"], lr=0.0, minutes=1, eval_tokens=65536)
    data = SequenceData(data_dir, spec, meta)
    return [evaluate(model, data.heldout, spec.batch_size, torch.device("cpu"), False, data.heldout_mask)
            for model in models]


def main(argv: list[str] | None = None) -> None:
    from models.zoo import load_token_lm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="a model folder (safetensors + multispec.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--keep", required=True, help="comma-separated layer indices, e.g. 0,11")
    ap.add_argument("--data", type=Path, help="print held-out losses of the source and the subset")
    args = ap.parse_args(argv)
    model, _ = load_token_lm(args.source, torch.float32)
    subset = keep_layers(model, [int(i) for i in args.keep.split(",")])
    if args.data is not None:
        source_loss, subset_loss = heldout_losses([model, subset], args.data)
        print(f"held-out loss: source {source_loss:.4f}, layers {args.keep} {subset_loss:.4f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(subset, str(args.out))
    print(f"{args.source} ({len(model.model.layers)} layers) -> {args.out} (layers {args.keep})")


if __name__ == "__main__":
    main()
