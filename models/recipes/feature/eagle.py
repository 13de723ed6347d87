"""Train an EAGLE-style feature head (:mod:`models.feature_heads`) on a frozen target's records.

Training-time test (EAGLE-3): step 0 reads the target's fused features at every position; step j
reads the head's own output hidden states of step j − 1, one position further on, so the head
learns to run ahead on its own features as it does when drafting. Step j's entry i (position i + j,
input token i + j + 1) attends to step 0's entries up to i and to its own chain (the same i) of
steps 1…j, which is exactly what it sees at drafting time. Loss: soft cross-entropy to the target's
top-k distribution (restricted to the draft vocabulary) at position i + j + 1, weighted 0.8^j.
Knows nothing about decoding; resumable through ``models.recipes.resumable`` (the loop is
:func:`models.recipes.feature.training.fit`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.feature_heads import EagleHead
from models.recipes.feature.training import fit, soft_cross_entropy, split_sequences, target_to_draft


def warm_start(head: EagleHead, target: torch.nn.Module) -> None:
    """Initialise the decoder layer, final norm and LM head rows from ``target``'s last layer and head
    (a target, or the one-layer draft LM of a ``residual`` head, whose token table is copied too)."""
    if head.own_embedding:
        head.embed.weight.data.copy_(target.get_input_embeddings().weight.data)
    inner = getattr(target, "model", None)
    layers = getattr(inner, "layers", None)
    sources = [] if layers is None else [(head.decoder.layers[0], layers[-1])]
    if layers is not None and hasattr(inner, "norm"):
        sources.append((head.norm if head.eagle3 else head.decoder.norm, inner.norm))
    for mine, theirs in sources:  # tensors of the same name and shape (architectures differ)
        own = mine.state_dict()
        mine.load_state_dict({k: v for k, v in theirs.state_dict().items() if k in own and own[k].shape == v.shape},
                             strict=False)
    head.lm_head.weight.data.copy_(target.get_output_embeddings().weight.data[head.d2t])


def _mask(steps: int, width: int, dtype) -> torch.Tensor:
    """Additive mask [1, 1, T, (steps + 1) T] for unroll ``steps``: query i sees step 0's keys <= i and
    key i of each later step."""
    i = torch.arange(width)
    allowed = [i[None, :] <= i[:, None]] + [torch.eye(width, dtype=torch.bool)] * steps
    allowed = torch.cat(allowed, dim=1)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def unrolled_loss(head: EagleHead, batch: dict, unroll: int, t2d: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """batch: tokens [B, T], features [B, T, F], top_ids/top_probs [B, T, k], valid [B, T] ->
    (weighted loss, top-1 agreement with the target's argmax per step)."""
    tokens, valid = batch["tokens"], batch["valid"]
    width = tokens.shape[1]
    cache = head.new_cache()
    inputs = head.fuse(batch["features"])
    total, accuracy = 0.0, []
    for j in range(unroll):
        shifted = torch.nn.functional.pad(tokens[:, j + 1:], (0, j + 1))  # token i + j + 1
        label_ok = torch.nn.functional.pad(valid[:, j + 1:], (0, j + 1), value=False)
        positions = (torch.arange(width) + j)[None]
        mask = None if j == 0 else _mask(j, width, inputs.dtype)
        logits, hidden = head.step(shifted, inputs, cache, positions, mask)
        ids = torch.nn.functional.pad(batch["top_ids"][:, j + 1:], (0, 0, 0, j + 1)).long()
        probs = torch.nn.functional.pad(batch["top_probs"][:, j + 1:], (0, 0, 0, j + 1)).float()
        per_position = soft_cross_entropy(logits, ids, probs, t2d)  # [B, T]
        weight = label_ok.float()
        total = total + 0.8 ** j * (per_position * weight).sum() / weight.sum().clamp_min(1)
        agree = (head.d2t[logits.argmax(-1)] == ids[..., 0]) & label_ok
        accuracy.append(float(agree.sum() / label_ok.sum().clamp_min(1)))
        inputs = hidden
    return total, accuracy


def sample_batch(data: dict, sequences: list[int], batch: int, width: int, rng: torch.Generator) -> dict:
    """``batch`` random windows of up to ``width`` positions from the given sequences, right-padded."""
    offsets = data["offsets"]
    picks = torch.randint(len(sequences), (batch,), generator=rng).tolist()
    rows = []
    for p in picks:
        start, end = int(offsets[sequences[p]]), int(offsets[sequences[p] + 1])
        first = start + int(torch.randint(max(1, end - start - width + 1), (1,), generator=rng))
        rows.append((first, min(end, first + width)))
    n = max(e - s for s, e in rows)
    out = {"tokens": torch.zeros(batch, n, dtype=torch.long), "valid": torch.zeros(batch, n, dtype=torch.bool),
           "features": torch.zeros(batch, n, data["features"].shape[1]),
           "top_ids": torch.zeros(batch, n, data["top_ids"].shape[1], dtype=torch.long),
           "top_probs": torch.zeros(batch, n, data["top_probs"].shape[1])}
    for row, (s, e) in enumerate(rows):
        out["tokens"][row, : e - s] = data["tokens"][s:e]
        out["valid"][row, : e - s] = True
        out["features"][row, : e - s] = data["features"][s:e].float()
        out["top_ids"][row, : e - s] = data["top_ids"][s:e].long()
        out["top_probs"][row, : e - s] = data["top_probs"][s:e].float()
    return out


def train(head: EagleHead, data: dict, out: Path, steps: int, batch: int, width: int, unroll: int, lr: float,
          seed: int, heldout_fraction: float = 0.05, eval_every: int = 200) -> dict:
    """Train ``head`` (resuming from ``out/checkpoint``); returns the final metrics."""
    out = Path(out)
    train_set, heldout = split_sequences(data["offsets"].shape[0] - 1, heldout_fraction)
    t2d = target_to_draft(head.d2t, head.vocab_size)
    trained = {n: p for n, p in head.named_parameters() if not n.startswith("embed.") and "embed_tokens" not in n}
    for n, p in head.named_parameters():
        p.requires_grad_(n in trained)
    params = list(trained.values())
    if head.residual:  # warm-started from a draft LM: its layer and head move 20x slower than the new feature path
        new = ("fc.", "combine.", "hidden_norm.")
        params = [{"params": [p for n, p in trained.items() if n.startswith(new)], "scale": 1.0},
                  {"params": [p for n, p in trained.items() if not n.startswith(new)], "scale": 0.05}]
    eval_rng = torch.Generator().manual_seed(seed + 1)
    eval_batches = [sample_batch(data, heldout, batch, width, eval_rng) for _ in range(4)]

    def evaluate() -> list[float]:
        runs = [unrolled_loss(head, b, unroll, t2d)[1] for b in eval_batches]
        return [sum(r[j] for r in runs) / len(runs) for j in range(unroll)]

    def batch_loss(rng):
        return unrolled_loss(head, sample_batch(data, train_set, batch, width, rng), unroll, t2d)

    return fit(head, params, batch_loss, evaluate, out / "checkpoint", out / "log.json", steps, lr, seed, eval_every,
               "eagle")
