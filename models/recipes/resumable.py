"""Resumable training checkpoints stored without pickle: safetensors for the model weights and
the optimizer's per-parameter tensors, JSON for everything else (step, clocks, RNG state,
optimizer hyper-parameters). A checkpoint is a directory written next to the old one and swapped
in with renames, so an interrupted save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

MODEL_FILE, OPTIM_FILE, STATE_FILE = "model.safetensors", "optimizer.safetensors", "state.json"


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``opt.state_dict()`` into flat tensors ("<param index>.<key>") and JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    state: dict) -> None:
    """Write model, optimizer and ``state`` (JSON-able) to ``ckpt_dir`` atomically enough."""
    ckpt_dir = Path(ckpt_dir)
    new, old = ckpt_dir.with_name(ckpt_dir.name + ".new"), ckpt_dir.with_name(ckpt_dir.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    save_model(model, str(new / MODEL_FILE))  # handles the tied embedding / lm_head
    tensors, meta = optimizer_tensors(opt)
    save_file(tensors, str(new / OPTIM_FILE))
    (new / STATE_FILE).write_text(json.dumps({**state, "optimizer": meta}, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if ckpt_dir.exists():
        ckpt_dir.rename(old)
    new.rename(ckpt_dir)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(ckpt_dir: Path) -> Path | None:
    """The complete checkpoint directory, falling back to the previous one after a crash."""
    for d in (Path(ckpt_dir), Path(ckpt_dir).with_name(Path(ckpt_dir).name + ".old")):
        if (d / STATE_FILE).exists():
            return d
    return None


def load_checkpoint(ckpt_dir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    device: torch.device) -> dict:
    """Restore model and optimizer in place; returns the saved ``state`` dict."""
    state = json.loads((ckpt_dir / STATE_FILE).read_text())
    load_model(model, str(ckpt_dir / MODEL_FILE), device=str(device))
    load_optimizer(opt, load_file(str(ckpt_dir / OPTIM_FILE), device=str(device)),
                   state.pop("optimizer"))
    return state


def save_weights(path: Path, model: torch.nn.Module) -> None:
    tmp = Path(str(path) + ".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)


def load_weights(path: Path, model: torch.nn.Module, device: torch.device) -> None:
    load_model(model, str(path), device=str(device))
