"""Training recipe for the image VQ tokenizer: a small diffusers ``VQModel`` turning a 32x32 RGB
image into an 8x8 grid of ids from a 512-code codebook (the vocabulary of the image AR model).

The stock codebook init uses ~11% of the codes, so the codebook is initialised from encoder
outputs and codes unused since the last restart are re-seeded from random recent encoder outputs.
Loss = MSE reconstruction + codebook loss + beta * commitment (straight-through estimator).

    python -m models.recipes.image.vq --preset smoke|cpu|gpu --data runs/image/data.npz \
        --out runs/image/vq-<preset> [--resume] [--max-minutes M] [--device cpu|cuda]

writes ``OUT/log.jsonl``, a resumable checkpoint ``OUT/ckpt`` (safetensors + JSON) and the final
``OUT/export`` (``save_pretrained(..., safe_serialization=True)`` + ``metrics.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from models.recipes.resumable import find_checkpoint, load_checkpoint, save_checkpoint
from models.recipes.image.data import load_dataset


@dataclass(frozen=True)
class VQShape:
    """Architecture: len(block_out_channels) - 1 downsamplings (3 -> 32/4 = 8x8 tokens)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 16
    vq_embed_dim: int = 8
    codebook_size: int = 512
    norm_num_groups: int = 16
    image_size: int = 32

    def build(self):
        """A freshly initialised ``diffusers.VQModel`` of this shape."""
        from diffusers import VQModel

        n = len(self.block_out_channels)
        return VQModel(in_channels=3, out_channels=3, block_out_channels=self.block_out_channels,
                       down_block_types=("DownEncoderBlock2D",) * n,
                       up_block_types=("UpDecoderBlock2D",) * n,
                       layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
                       vq_embed_dim=self.vq_embed_dim, num_vq_embeddings=self.codebook_size,
                       norm_num_groups=self.norm_num_groups, sample_size=self.image_size)


@dataclass(frozen=True)
class VQPreset:
    name: str
    steps: int
    batch_size: int
    lr: float = 2e-3
    warmup: int = 20
    beta: float = 0.25  # commitment weight
    restart_every: int = 25  # steps between dead-code restarts (0 = never)
    eval_every: int = 100
    eval_images: int = 0  # held-out images for PSNR / train images for usage; 0 = all
    final_images: int = 0  # the same for the exported metrics (0 = all, the reported numbers)
    ckpt_every: int = 100
    log_every: int = 10
    bf16: bool = False  # autocast on CUDA only
    seed: int = 0
    shape: VQShape = field(default_factory=VQShape)


PRESETS = {
    "smoke": VQPreset("smoke", steps=6, batch_size=8, warmup=2, restart_every=3, eval_every=3,
                      eval_images=32, final_images=32, ckpt_every=3, log_every=1),
    "cpu": VQPreset("cpu", steps=400, batch_size=24, warmup=20, restart_every=25, eval_every=100,
                    eval_images=256, ckpt_every=50),
    "gpu": VQPreset("gpu", steps=3000, batch_size=256, lr=2e-3, warmup=100, restart_every=100,
                    eval_every=500, ckpt_every=500, log_every=50, bf16=True),
}


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def quantize(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest code (Euclidean, as ``VectorQuantizer``) for z [B,D,h,w]; codebook [K,D].
    Returns (z_q [B,D,h,w], ids [B,h,w])."""
    b, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d).float()
    ids = torch.cdist(flat, codebook.float()).argmin(1)
    z_q = codebook[ids].view(b, h, w, d).permute(0, 3, 1, 2).to(z.dtype)
    return z_q, ids.view(b, h, w)


def autocast(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, images: torch.Tensor, device: torch.device, bf16: bool = False,
             batch_size: int = 256) -> dict:
    """PSNR (dB, on [0, 255]) of the full encode -> quantize -> decode path and code usage.

    images: uint8 [N,H,W,3] on any device."""
    model.eval()
    codebook = model.quantize.embedding.weight
    mse, counts = [], torch.zeros(codebook.shape[0], device=device)
    for i in range(0, len(images), batch_size):
        x = to_model_range(images[i:i + batch_size].to(device))
        with autocast(device, bf16):
            z = model.encode(x).latents
        z_q, ids = quantize(z.float(), codebook)
        with autocast(device, bf16):
            y = model.decode(z_q, force_not_quantize=True).sample
        y = ((y.float().clamp(-1, 1) + 1) * 127.5).round()
        mse.append(((y - (x + 1) * 127.5) ** 2).flatten(1).mean(1))
        counts += torch.bincount(ids.flatten(), minlength=codebook.shape[0])
    model.train()
    mse_all = torch.cat(mse).clamp_min(1e-10)
    p = counts / counts.sum()
    return {"psnr": float((10 * torch.log10(255.0 ** 2 / mse_all)).mean()),
            "usage": float((counts > 0).float().mean()),
            "perplexity": float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))}


def restart_dead_codes(codebook: torch.nn.Parameter, usage: torch.Tensor, recent: torch.Tensor,
                       opt: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Re-seed codes with usage == 0 from random rows of recent [M, D]; returns how many."""
    dead = (usage == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    pick = torch.randint(len(recent), (len(dead),), generator=generator).to(recent.device)
    noise = torch.randn(len(dead), recent.shape[1], generator=generator).to(recent.device)
    with torch.no_grad():
        codebook[dead] = (recent[pick] + 1e-3 * recent.std() * noise).to(codebook.dtype)
    for v in opt.state.get(codebook, {}).values():  # stale Adam moments for the re-seeded rows
        if torch.is_tensor(v) and v.shape == codebook.shape:
            v[dead] = 0
    return len(dead)


def lr_at(step: int, p: VQPreset) -> float:
    if step < p.warmup:
        return p.lr * (step + 1) / p.warmup
    t = (step - p.warmup) / max(1, p.steps - p.warmup)
    return p.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def train(p: VQPreset, data_path: Path, out: Path, device: torch.device, resume: bool = False,
          max_minutes: float | None = None) -> dict:
    from tqdm import tqdm

    data = load_dataset(data_path)
    images = torch.from_numpy(data["images"]).to(device)  # uint8 [N,32,32,3]
    split = torch.from_numpy(data["split"])
    train_idx = split.eq(0).nonzero().flatten()
    heldout = images[split.eq(1).nonzero().flatten().to(device)]
    eval_n = p.eval_images or len(images)
    usage_train = images[train_idx[:eval_n].to(device)]
    heldout = heldout[:eval_n]

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(p.seed)
        model = p.shape.build().to(device)
    codebook = model.quantize.embedding.weight
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(p.seed)
    usage = torch.zeros(p.shape.codebook_size, device=device)
    step, elapsed = 0, 0.0
    out.mkdir(parents=True, exist_ok=True)
    ckpt = find_checkpoint(out / "ckpt") if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt, device)
        step, elapsed = state["step"], state["elapsed"]
        gen.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        usage = torch.tensor(state["usage"], device=device)
        print(f"resumed from {ckpt} at step {step}")
    elif (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    log = (out / "log.jsonl").open("a")

    def save():
        save_checkpoint(out / "ckpt", model, opt, {
            "step": step, "elapsed": elapsed, "preset": p.name, "usage": usage.tolist(),
            "generator": gen.get_state().tolist()})

    def write(rec: dict):
        log.write(json.dumps(rec) + "\n")
        log.flush()

    n_params = sum(t.numel() for t in model.parameters())
    print(f"VQModel {n_params / 1e6:.2f}M params, preset {p.name}, device {device}")
    t0, bar = time.time(), tqdm(total=p.steps, initial=step, desc=f"vq-{p.name}")
    model.train()
    while step < p.steps:
        # 1. batch with random horizontal flips
        idx = train_idx[torch.randint(len(train_idx), (p.batch_size,), generator=gen)]
        x = to_model_range(images[idx.to(device)])  # [B,3,32,32]
        flip = (torch.rand(p.batch_size, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        # 2. encode; on the first step initialise the codebook from encoder outputs
        with autocast(device, p.bf16):
            z = model.encode(x).latents
        z = z.float()
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if step == 0 and ckpt is None:
            n, k = len(flat), len(codebook)
            pick = (torch.randperm(n, generator=gen)[:k] if n >= k
                    else torch.randint(n, (k,), generator=gen))
            with torch.no_grad():
                codebook.copy_(flat[pick.to(device)])
        # 3. quantize (straight-through), decode, losses
        z_q, ids = quantize(z, codebook)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commit_loss = F.mse_loss(z, z_q.detach())
        with autocast(device, p.bf16):
            y = model.decode(z + (z_q - z).detach(), force_not_quantize=True).sample
        rec = F.mse_loss(y.float(), x)
        loss = rec + codebook_loss + p.beta * commit_loss
        for g in opt.param_groups:
            g["lr"] = lr_at(step, p)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        usage += torch.bincount(ids.flatten(), minlength=len(usage))
        step += 1
        bar.update(1)
        # 4. dead-code restarts, logging, evaluation, checkpoints
        restarted = 0
        if p.restart_every and step % p.restart_every == 0 and step < p.steps:
            restarted = restart_dead_codes(codebook, usage, flat, opt, gen)
            usage.zero_()
        if step % p.log_every == 0 or restarted:
            write({"step": step, "loss": loss.item(), "rec": rec.item(),
                   "commit": commit_loss.item(), "lr": lr_at(step - 1, p), "restarted": restarted,
                   "elapsed": elapsed + time.time() - t0})
            bar.set_postfix(rec=f"{rec.item():.4f}", dead=restarted)
        if step % p.eval_every == 0 or step == p.steps:
            ev = evaluate(model, heldout, device, p.bf16)
            ev["usage_train"] = evaluate(model, usage_train, device, p.bf16)["usage"]
            write({"step": step, **{f"heldout_{k}": v for k, v in ev.items()}})
            tqdm.write(f"step {step}: held-out PSNR {ev['psnr']:.2f} dB, usage held-out "
                       f"{ev['usage']:.1%} / train {ev['usage_train']:.1%}")
        out_of_time = max_minutes is not None and time.time() - t0 > 60 * max_minutes
        if step % p.ckpt_every == 0 or step == p.steps or out_of_time:
            elapsed += time.time() - t0
            t0 = time.time()
            save()
        if out_of_time:
            print(f"stopping at step {step}: --max-minutes {max_minutes} reached")
            break
    bar.close()
    elapsed += time.time() - t0
    return export(model, out, p, data_path, step, elapsed, device)


def export(model, out: Path, p: VQPreset, data_path: Path, step: int, elapsed: float,
           device: torch.device) -> dict:
    """Full held-out evaluation, then ``save_pretrained`` (safetensors) + metrics.json."""
    data = load_dataset(data_path)
    images = torch.from_numpy(data["images"]).to(device)
    split = torch.from_numpy(data["split"]).to(device)
    n = p.final_images or len(images)
    held = evaluate(model, images[split == 1][:n], device, p.bf16)
    metrics = {"preset": p.name, "steps": step, "complete": step >= p.steps,
               "train_seconds": round(elapsed, 1), "device": str(device),
               "params": sum(t.numel() for t in model.parameters()),
               "heldout_psnr": held["psnr"], "heldout_usage": held["usage"],
               "heldout_perplexity": held["perplexity"],
               "train_usage": evaluate(model, images[split == 0][:n], device, p.bf16)["usage"],
               "config": asdict(p)}
    model.save_pretrained(out / "export", safe_serialization=True)
    (out / "export" / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"held-out PSNR {held['psnr']:.2f} dB, code usage held-out {held['usage']:.1%} / "
          f"train {metrics['train_usage']:.1%} ({step} steps, {elapsed / 60:.1f} min) "
          f"-> {out / 'export'}")
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--data", type=Path, default=Path("runs/image/data.npz"))
    ap.add_argument("--out", type=Path, default=None, help="default runs/image/vq-<preset>")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = args.out or Path(f"runs/image/vq-{args.preset}")
    train(PRESETS[args.preset], args.data, out, device, args.resume, args.max_minutes)


if __name__ == "__main__":
    main()
