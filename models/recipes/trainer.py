"""The shared trainer of the bundled targets and drafters (``LlamaForCausalLM``), for every
modality; the command is ``python -m models.recipes.train``. Knows nothing of any modality's data:
the caller passes a ``make_data(spec)`` (text: random windows of a token file; image and speech:
padded token sequences with a loss mask, ``models.recipes.token_lm``).

Each text model trains on random windows of ``runs/text/tokens/train.bin`` (AdamW, linear warmup then
cosine, bf16 autocast on CUDA), is evaluated on fixed held-out windows, checkpoints to
``OUT/work/<which>/`` (safetensors + JSON, resumable with ``--resume``), logs to
``OUT/<which>.log.jsonl`` and is finally exported in bf16 with the tokenizer to ``OUT/<which>/``
(the weights with the best held-out loss). A wall-clock budget (``--max-minutes``, shared by the
models in proportion to the preset's minutes) ends training cleanly; the LR schedule follows
whichever of steps or time runs out first.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlamaForCausalLM

from models.recipes.resumable import (find_checkpoint, load_checkpoint, load_weights, save_checkpoint,
                               save_weights)
from models.recipes.presets import ModelPreset, ModelShape, TrainSpec

WHICH = ("target", "draft")  # training order for --which both: the drafter is distilled from the target
EXPORT_SHARD = "14MB"  # every bundled safetensors file stays under 15 MB


class TokenWindows:
    """Random training windows from a uint16 token file (read through ``np.memmap``)."""

    def __init__(self, path: Path, seq_len: int):
        self.data = np.memmap(path, dtype=np.uint16, mode="r")
        self.seq_len = seq_len
        if len(self.data) <= seq_len + 1:
            raise ValueError(f"{path}: {len(self.data)} tokens, fewer than one window")

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, None]:
        """([batch, seq_len + 1] int64, no loss mask): inputs are [:, :-1], targets [:, 1:]."""
        starts = rng.integers(0, len(self.data) - self.seq_len - 1, size=batch)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        return torch.from_numpy(self.data[idx].astype(np.int64)), None


def heldout_windows(path: Path, seq_len: int, max_tokens: int) -> torch.Tensor:
    """[n, seq_len + 1] fixed windows spread evenly over the file (which is grouped by source),
    non-overlapping when the file is long enough; n = max_tokens // seq_len."""
    data = np.fromfile(path, dtype=np.uint16)
    n, last = max(1, max_tokens // seq_len), len(data) - seq_len - 1
    if last < 0:
        raise ValueError(f"{path}: too short for one held-out window of {seq_len}")
    starts = np.linspace(0, last, n).round().astype(np.int64)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(data[idx].astype(np.int64))


def lm_loss(model: torch.nn.Module, batch: torch.Tensor, teacher: torch.nn.Module | None = None,
            distill: float = 0.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) of a [B, T + 1] batch over the targets where ``mask``
    [B, T] is true (all when None); with a teacher, mixed with ``distill`` × KL(p_teacher ‖ q_model),
    which trains a drafter to agree with its target."""
    logits = model(input_ids=batch[:, :-1], use_cache=False).logits.float().flatten(0, 1)  # [B·T, V]
    keep = None if mask is None else mask.flatten()
    if keep is not None:
        logits = logits[keep]
    targets = batch[:, 1:].flatten() if keep is None else batch[:, 1:].flatten()[keep]
    loss = F.cross_entropy(logits, targets)
    if teacher is None or distill == 0.0:
        return loss
    with torch.no_grad():
        p_log = F.log_softmax(teacher(input_ids=batch[:, :-1], use_cache=False).logits.float().flatten(0, 1), -1)
        p_log = p_log.clamp_min(torch.finfo(p_log.dtype).min)  # a masked teacher's −inf: 0·log 0 = 0, not nan
    if keep is not None:
        p_log = p_log[keep]
    kl = F.kl_div(F.log_softmax(logits, -1), p_log, log_target=True, reduction="batchmean")
    return (1 - distill) * loss + distill * kl


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch: int, device: torch.device,
             amp: bool, mask: torch.Tensor | None = None) -> float:
    """Mean held-out loss per scored token of ``windows`` [n, T + 1] (``mask`` [n, T] picks targets)."""
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch].to(device, non_blocking=True)
        keep = None if mask is None else mask[i:i + batch].to(device)
        scored = chunk[:, 1:].numel() if keep is None else int(keep.sum())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            total += lm_loss(model, chunk, mask=keep) * scored
        count += scored
    model.train()
    return total.item() / count


def lr_at(spec: TrainSpec, step: int, elapsed: float, budget_s: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from ``lr`` to ``min_lr_ratio * lr``
    with progress max(step / max_steps, elapsed / budget)."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    progress = min(1.0, max(step / spec.max_steps, elapsed / budget_s))
    floor = spec.lr * spec.min_lr_ratio
    return floor + (spec.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, spec: TrainSpec, device: torch.device):
    """AdamW; no weight decay on norms (1-D parameters)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay},
              {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=1e-8,
                             fused=device.type == "cuda")


class Stop:
    """Set by SIGTERM/SIGINT so the loop ends like a spent budget (save and export)."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum, frame):
            cls.requested = True
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from, and its "final" line."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines()
                if ln and json.loads(ln)["step"] <= step and not json.loads(ln).get("final")]
        path.write_text("".join(ln + "\n" for ln in keep))


def train_model(which: str, preset: ModelPreset, out: Path, make_data, budget_s: float, resume: bool,
                device: torch.device, compile_model: bool, config=None, save_extra=None,
                wrap_teacher=None, init_from: Path | None = None, amp: bool | None = None) -> Path:
    """Train one model (resuming if asked) and export it; returns the export directory.

    ``make_data(spec)`` gives an object with ``sample(batch, rng) -> (tokens [B, T+1], mask [B, T]
    or None)``, ``heldout`` [n, T+1] and ``heldout_mask``; ``config`` is the model config (default:
    the text shape's); ``save_extra(export_dir)`` writes what else the export needs (tokenizer...);
    ``wrap_teacher(model)`` changes what the drafter is distilled towards (e.g. guided logits);
    ``init_from`` (safetensors of the same shape) warm-starts a fresh run; ``amp`` runs forward and
    loss under bf16 autocast (None: on CUDA only; True also suits CPUs with AVX-512 bf16).
    """
    shape: ModelShape = preset.shape(which)
    spec: TrainSpec = preset.train_spec(which)
    work, log_path, export_dir = out / "work" / which, out / f"{which}.log.jsonl", out / which
    ckpt_dir, best_path = work / "checkpoint", work / "best.safetensors"
    amp = device.type == "cuda" if amp is None else amp

    seed = preset.seed + WHICH.index(which)
    torch.manual_seed(seed)  # weight init; this is the training entry point
    model = LlamaForCausalLM(config or shape.config()).to(device)
    opt = make_optimizer(model, spec, device)
    state = {"step": 0, "elapsed_s": 0.0, "best_heldout": None,
             "rng": np.random.default_rng(seed).bit_generator.state,
             "preset": preset.name, "shape": asdict(shape), "train": asdict(spec), "bf16_autocast": amp}
    found = find_checkpoint(ckpt_dir)
    if found and not resume:
        raise SystemExit(f"{found} exists: pass --resume to continue it, or use another --out")
    if found:
        saved = load_checkpoint(found, model, opt, device)
        if saved["shape"] != state["shape"]:
            raise SystemExit(f"{found} holds shape {saved['shape']}, preset wants {state['shape']}")
        state.update({k: saved[k] for k in ("step", "elapsed_s", "best_heldout", "rng")})
        truncate_log(log_path, state["step"])
        print(f"[{which}] resumed from {found} at step {state['step']}", flush=True)
    elif init_from is not None:
        load_weights(init_from, model, device)
        state["init_from"] = str(init_from)
        print(f"[{which}] weights from {init_from}", flush=True)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]

    n_params = sum(p.numel() for p in model.parameters())
    print(f"[{which}] {shape} {n_params / 1e6:.2f}M params on {device}, "
          f"budget {budget_s / 60:.1f} min, <= {spec.max_steps} steps", flush=True)
    data = make_data(spec)
    fwd = torch.compile(model) if compile_model else model
    teacher = None
    if which == "draft" and spec.distill > 0:
        if not (out / "target" / "config.json").is_file():
            raise SystemExit(f"distilling the drafter needs the trained target in {out / 'target'}")
        teacher = LlamaForCausalLM.from_pretrained(out / "target", dtype=torch.float32).to(device).eval()
        if wrap_teacher is not None:
            teacher = wrap_teacher(teacher)
        print(f"[{which}] distilling from {out / 'target'} (weight {spec.distill})", flush=True)

    def log(**rec) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def eval_and_keep_best() -> float:
        loss = evaluate(fwd, data.heldout, spec.batch_size, device, amp, data.heldout_mask)
        if state["best_heldout"] is None or loss < state["best_heldout"]:
            state["best_heldout"] = loss
            save_weights(best_path, model)
        return loss

    def checkpoint() -> None:
        state["rng"] = rng.bit_generator.state
        save_checkpoint(ckpt_dir, model, opt, state)

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    model.train()
    t_start, elapsed0 = time.perf_counter(), state["elapsed_s"]
    run_loss, run_n, t_log, tok_log = torch.zeros((), device=device), 0, time.perf_counter(), 0
    bar = tqdm(total=spec.max_steps, initial=state["step"], desc=which, dynamic_ncols=True,
               mininterval=2.0 if sys.stderr.isatty() else 30.0)  # sparse lines in log files
    while True:  # a finished run that is resumed stops at once: evaluate, save, export
        step = state["step"]
        elapsed = elapsed0 + time.perf_counter() - t_start
        if step >= spec.max_steps or elapsed >= budget_s or Stop.requested:
            state["elapsed_s"] = elapsed
            heldout = eval_and_keep_best()
            log(step=step, train_loss=None, heldout_loss=round(heldout, 4), lr=None,
                tokens=step * spec.tokens_per_step, elapsed_s=round(elapsed, 1), final=True,
                stopped_by="steps" if step >= spec.max_steps else
                "signal" if Stop.requested else "time")
            checkpoint()
            break
        lr = lr_at(spec, step, elapsed, budget_s)
        for g in opt.param_groups:
            g["lr"] = lr
        batch, mask = data.sample(spec.batch_size, rng)
        batch = batch.to(device, non_blocking=True)
        mask = None if mask is None else mask.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = lm_loss(fwd, batch, teacher, spec.distill, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] = step = step + 1
        run_loss += loss.detach()
        run_n += 1
        tok_log += spec.tokens_per_step
        bar.update(1)
        heldout = eval_and_keep_best() if step % spec.eval_every == 0 else None
        if step % spec.log_every == 0 or heldout is not None:
            now = time.perf_counter()
            train_loss = (run_loss / run_n).item()
            tps = tok_log / (now - t_log)
            log(step=step, train_loss=round(train_loss, 4),
                heldout_loss=None if heldout is None else round(heldout, 4), lr=lr,
                tokens=step * spec.tokens_per_step,
                elapsed_s=round(elapsed0 + now - t_start, 1), tokens_per_s=round(tps))
            best = state["best_heldout"]
            bar.set_postfix(loss=f"{train_loss:.3f}", best_held="-" if best is None else
                            f"{best:.3f}", lr=f"{lr:.1e}", tok_s=f"{tps:.0f}")
            run_loss, run_n, t_log, tok_log = torch.zeros((), device=device), 0, now, 0
        if step % spec.checkpoint_every == 0:
            state["elapsed_s"] = elapsed0 + time.perf_counter() - t_start
            checkpoint()
    bar.close()
    return export(model, best_path, export_dir, save_extra, state, n_params, device)


def export(model: LlamaForCausalLM, best_path: Path, export_dir: Path, save_extra, state: dict,
           n_params: int, device: torch.device) -> Path:
    """Save the best held-out weights in bf16 (shards under 15 MB) and what ``save_extra`` adds."""
    if best_path.exists():
        load_weights(best_path, model, device)
    model = model.to("cpu", torch.bfloat16).eval()
    model.save_pretrained(str(export_dir), max_shard_size=EXPORT_SHARD)
    if save_extra is not None:
        save_extra(export_dir)
    recorded = ("preset", "shape", "train", "step", "elapsed_s", "init_from", "bf16_autocast")
    summary = {k: state[k] for k in recorded if k in state}
    summary.update(params=n_params, tokens_seen=state["step"] * state["train"]["batch_size"]
                   * state["train"]["seq_len"], best_heldout_loss=state["best_heldout"],
                   device=str(device), torch=torch.__version__)
    (export_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    files = sorted(export_dir.glob("*.safetensors"))
    print(f"exported {export_dir}: best held-out loss {state['best_heldout']:.4f}, "
          + ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f} MB" for f in files), flush=True)
    return export_dir
