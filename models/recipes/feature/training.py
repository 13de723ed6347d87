"""What training any feature drafter needs: the draft vocabulary, the soft cross-entropy to the
target's top-k labels restricted to it, the held-out split, and the resumable optimisation loop
(AdamW, warm-up and cosine decay, gradient clipping, checkpoints through ``models.recipes.resumable``,
a tqdm bar and a JSON log). Knows nothing about any head's architecture or about decoding.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from models.recipes import resumable


def draft_vocabulary(data: dict, vocab_size: int, size: int) -> torch.Tensor:
    """[Vd] target ids of the draft vocabulary: the ``size`` most frequent target argmaxes and tokens."""
    if size >= vocab_size:
        return torch.arange(vocab_size)
    counts = torch.bincount(data["top_ids"][:, 0].long(), minlength=vocab_size).float()
    counts += 0.5 * torch.bincount(data["tokens"].long(), minlength=vocab_size).float()
    return counts.topk(size).indices.sort().values


def target_to_draft(d2t: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[V] the draft row of each target id (−1 off the draft vocabulary); d2t [Vd]."""
    t2d = torch.full((vocab_size,), -1, dtype=torch.long)
    t2d[d2t] = torch.arange(d2t.shape[0])
    return t2d


def soft_cross_entropy(logits: torch.Tensor, top_ids: torch.Tensor, top_probs: torch.Tensor,
                       t2d: torch.Tensor) -> torch.Tensor:
    """logits [..., Vd] against the target's top-k ids [..., k] (target ids) and probabilities [..., k],
    renormalised over the ids in the draft vocabulary -> the cross-entropy per position [...]."""
    draft_ids = t2d[top_ids.long()]  # −1 off the draft vocabulary
    probs = top_probs.float() * (draft_ids >= 0)
    probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-6)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, draft_ids.clamp_min(0))
    return -(probs * logp).sum(-1)


def split_sequences(num_sequences: int, heldout_fraction: float = 0.05) -> tuple[list[int], list[int]]:
    """(training sequence indices, held-out ones): every ``1 / heldout_fraction``-th sequence is held out."""
    heldout = list(range(0, num_sequences, max(2, int(1 / heldout_fraction))))
    kept = set(heldout)
    return [s for s in range(num_sequences) if s not in kept], heldout


def fit(head: torch.nn.Module, params: list[torch.nn.Parameter], batch_loss: Callable, evaluate: Callable,
        checkpoint: Path, log: Path, steps: int, lr: float, seed: int, eval_every: int, desc: str) -> dict:
    """Optimise ``params`` of ``head`` for ``steps`` steps (resuming from ``checkpoint``); returns the
    last log entry. ``batch_loss(rng) -> (loss, train metrics)`` draws its batch from ``rng`` (seeded
    by ``seed`` and the step, so a resumed run continues the same way); ``evaluate() -> held-out
    metrics`` runs every ``eval_every`` steps and at the end, with a checkpoint and a log line.
    ``params`` may be parameter groups (dicts) with a ``scale`` on ``lr`` each."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    state = {"step": 0, "seconds": 0.0, "log": []}
    found = resumable.find_checkpoint(checkpoint)
    if found is not None:
        state = resumable.load_checkpoint(found, head, opt, torch.device("cpu"))
    rng = torch.Generator().manual_seed(seed + state["step"])
    bar = tqdm(total=steps, initial=state["step"], desc=desc, dynamic_ncols=True)
    head.train()
    started = time.time() - state["seconds"]
    if not state["log"]:
        head.eval()
        with torch.no_grad():
            state["log"].append({"step": 0, "heldout_top1": evaluate(), "seconds": 0.0})
        head.train()
    while state["step"] < steps:
        warm = min(1.0, (state["step"] + 1) / 100)
        for group in opt.param_groups:
            group["lr"] = group.get("scale", 1.0) * lr * warm * 0.5 * (1 + math.cos(math.pi * state["step"] / steps))
        loss, accuracy = batch_loss(rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], 1.0)
        opt.step()
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc="/".join(f"{a:.2f}" for a in accuracy))
        if state["step"] % eval_every == 0 or state["step"] == steps:
            state["seconds"] = time.time() - started
            head.eval()
            with torch.no_grad():
                heldout = evaluate()
            head.train()
            state["log"].append({"step": state["step"], "loss": float(loss.detach()), "train_top1": accuracy,
                                 "heldout_top1": heldout, "seconds": state["seconds"]})
            resumable.save_checkpoint(checkpoint, head, opt, state)
            Path(log).write_text(json.dumps(state["log"], indent=1))
    bar.close()
    head.eval()
    return state["log"][-1] if state["log"] else {}
