"""Train Medusa heads (:class:`models.feature_heads.MedusaHead`) on a frozen target's records.

The heads read only the target's final hidden state at a position, so training needs no unrolling:
every record row i is one example. Head k (k = 1..K) learns the target's top-k distribution at row
i + k (its next-token distribution there, i.e. the token at i + 1 + k), restricted to the draft
vocabulary, by soft cross-entropy weighted 0.8^k; a label that would lie past the end of row i's
sequence is masked. Knows nothing about decoding; resumable through ``models.recipes.resumable``
(the loop is :func:`models.recipes.feature.training.fit`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.feature_heads import MedusaHead
from models.recipes.feature.training import fit, soft_cross_entropy, split_sequences, target_to_draft

DECAY = 0.8  # head k's loss weight is DECAY ** k (Medusa's λ_k)


def rows_of(data: dict, sequences: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [n] of the given sequences, the end row of each one's sequence [n]), from offsets [S + 1]."""
    offsets = data["offsets"]
    rows = [torch.arange(int(offsets[s]), int(offsets[s + 1])) for s in sequences]
    ends = [torch.full((int(offsets[s + 1] - offsets[s]),), int(offsets[s + 1])) for s in sequences]
    return torch.cat(rows), torch.cat(ends)


def batch_at(data: dict, rows: torch.Tensor, ends: torch.Tensor, num_heads: int) -> dict:
    """rows [B] (with their sequence ends [B]) -> features [B, F], top_ids/top_probs [K, B, k] of rows
    i + 1 .. i + K, and valid [K, B] (False where the label row lies past the sequence)."""
    shift = torch.arange(1, num_heads + 1)[:, None]  # [K, 1]
    labels = rows[None] + shift  # [K, B]
    valid = labels < ends[None]
    labels = labels.clamp_max(data["tokens"].shape[0] - 1)
    return {"features": data["features"][rows].float(), "top_ids": data["top_ids"][labels].long(),
            "top_probs": data["top_probs"][labels].float(), "valid": valid}


def heads_loss(head: MedusaHead, batch: dict, t2d: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(Σ_k 0.8^k · mean soft cross-entropy of head k over its valid rows, top-1 agreement per head)."""
    logits = head.predict(batch["features"])  # [K, B, Vd]
    per_row = soft_cross_entropy(logits, batch["top_ids"], batch["top_probs"], t2d)  # [K, B]
    weight = batch["valid"].float()
    counts = weight.sum(-1).clamp_min(1)  # [K]
    decay = DECAY ** torch.arange(1, logits.shape[0] + 1, dtype=torch.float32)
    loss = (decay * (per_row * weight).sum(-1) / counts).sum()
    agree = (head.d2t[logits.argmax(-1)] == batch["top_ids"][..., 0]) & batch["valid"]
    return loss, (agree.sum(-1) / counts).tolist()


def train(head: MedusaHead, data: dict, checkpoint: Path, log: Path, steps: int, rows_per_step: int, lr: float,
          seed: int, heldout_fraction: float = 0.05, eval_every: int = 200, eval_rows: int = 4096) -> dict:
    """Train ``head`` on random record rows (resuming from ``checkpoint``); returns the final metrics
    (``heldout_top1``: each head's top-1 agreement with the target on held-out sequences)."""
    train_set, heldout = split_sequences(data["offsets"].shape[0] - 1, heldout_fraction)
    rows, ends = rows_of(data, train_set)
    t2d = target_to_draft(head.d2t, head.vocab_size)
    held_rows, held_ends = rows_of(data, heldout)
    pick = torch.randperm(held_rows.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:eval_rows]
    eval_batches = [batch_at(data, held_rows[chunk], held_ends[chunk], head.num_heads)
                    for chunk in pick.split(rows_per_step)]
    params = list(head.parameters())

    def batch_loss(rng):
        chosen = torch.randint(rows.shape[0], (rows_per_step,), generator=rng)
        return heads_loss(head, batch_at(data, rows[chosen], ends[chosen], head.num_heads), t2d)

    def evaluate() -> list[float]:  # agreement over all evaluation rows, per head
        hits, counts = torch.zeros(head.num_heads), torch.zeros(head.num_heads)
        for b in eval_batches:
            _, accuracy = heads_loss(head, b, t2d)
            n = b["valid"].sum(-1).float()
            hits, counts = hits + torch.tensor(accuracy) * n, counts + n
        return (hits / counts.clamp_min(1)).tolist()

    return fit(head, params, batch_loss, evaluate, Path(checkpoint), Path(log), steps, lr, seed, eval_every, "medusa")
