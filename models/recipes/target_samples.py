"""Sample token sequences from a trained image (or speech) target, to distil its drafter on-policy.

A drafter agrees with its target more often when it learns on the sequences it will be asked to
draft, i.e. the target's own outputs under the decoding settings, rather than only on the training
data (DistillSpec, Zhou et al. 2023). This draws sequences from the target under the same
classifier-free guidance, logit masks (codes only; the speech layout's slots) and temperature as
decoding (each step is decoding's own guided forward), conditioned on balanced class prompts (image)
or on the condition prefixes of a token dataset (``--data``), and writes them in the ``tokens.npz``
format of :mod:`models.recipes.token_lm` with a held-out slice; ``meta.json`` is the target's own
``multispec.json`` (so a drafter trained on the samples exports the target's vocabulary).

    python -m models.recipes.target_samples --target models/checkpoints/image-target --out runs/image/onpolicy \
        --num 131072 --guidance 3 --temperature 1 [--data runs/image/ar] [--device cuda]

Then ``python -m models.recipes.train image --which draft --data runs/image/onpolicy --out DIR`` with the
target in ``DIR/target`` distils a drafter on them.

Text (``--text runs/text/tokens``): prompts are random windows of the training token file; the
samples (alternately greedy and T = 1, the two regimes the bench decodes in) are appended, each
followed by eos, to a copy of that file, and ``heldout.bin`` is copied unchanged, so
``python -m models.recipes.train text --which draft --data OUT`` distils on corpus + target samples.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models import zoo
from models.recipes.decoding_masks import prompt_masks
from multispec.guidance import GuidedLM, Mask
from multispec.sampling import Sampling


def class_prompts(meta: dict, num: int) -> list[torch.Tensor]:
    """``num`` one-token class prompts, classes in turn (balanced)."""
    classes = len(meta["class_names"])
    return [torch.tensor([meta["class_token_offset"] + i % classes]) for i in range(num)]


def dataset_prompts(folder: Path, num: int, seed: int) -> list[torch.Tensor]:
    """``num`` condition prefixes of training rows (tokens before the first scored target)."""
    with np.load(folder / "tokens.npz") as f:
        tokens, mask, split = f["tokens"].astype(np.int64), f["mask"].astype(bool), f["split"]
    rows = np.nonzero(split == 0)[0]
    rows = np.random.default_rng(seed).choice(rows, size=num, replace=num > len(rows))
    return [torch.from_numpy(tokens[r, : int(mask[r].argmax()) + 1]) for r in rows]


@torch.inference_mode()
def sample_batch(model, prompts: torch.Tensor, new_tokens: int, meta: dict, guidance: float,
                 temperature: float, generator: torch.Generator,
                 allowed: Mask = None) -> tuple[torch.Tensor, torch.Tensor]:
    """prompts [B, P] (one length) -> (continuations [B, new_tokens], lengths [B]): a row ends with
    its eos (image grids have a fixed length and no eos), the rest is pad; temperature 0 = greedy.

    Each step is decoding's own guided, masked forward (:meth:`GuidedLM.forward_rows`): guidance
    against ``meta["unconditional_prefix"]``, then ``allowed`` (any form
    :func:`multispec.guidance.allowed_at` takes; :func:`build` passes decoding's masks,
    :func:`~models.recipes.decoding_masks.prompt_masks`); None samples from the whole vocabulary."""
    lm = GuidedLM(model, guidance, torch.tensor(meta.get("unconditional_prefix") or [], dtype=torch.long))
    out, sampling, batch = [], Sampling(temperature), prompts
    done = torch.zeros(prompts.shape[0], dtype=torch.bool, device=prompts.device)
    lengths = torch.zeros(prompts.shape[0], dtype=torch.long, device=prompts.device)
    eos, pad = meta.get("eos"), meta.get("pad", 0)
    stops_at_eos = eos is not None and meta.get("modality") != "image"
    for _ in range(new_tokens):
        logits = lm.forward_rows(batch, last_only=True, allowed=allowed)[:, -1]
        token = sampling.pick(sampling.probs(logits), generator)
        token = torch.where(done, torch.full_like(token, pad), token)
        out.append(token)
        lengths += ~done
        if stops_at_eos:
            done |= token == eos
            if bool(done.all()):
                break
        batch = token[:, None]
    return torch.stack(out, 1), lengths


def corpus_slice(corpus: np.ndarray, tokens: int | None, chunks: int = 64) -> np.ndarray:
    """``tokens`` tokens of the corpus in ``chunks`` evenly spaced pieces (all of it when None or shorter)."""
    if tokens is None or len(corpus) <= tokens:
        return corpus
    size = tokens // chunks
    starts = np.linspace(0, len(corpus) - size, chunks).astype(int)
    return np.concatenate([corpus[s: s + size] for s in starts])


def build_text(target: Path, tokens_dir: Path, out: Path, num: int, prompt_len: int, new_tokens: int,
               batch_size: int, device: str, seed: int, corpus_tokens: int | None = None) -> dict:
    """Text samples appended to the corpus token file (see the module docstring)."""
    model, _ = zoo.load_folder(target, device=device)
    eos = int(model.config.eos_token_id)
    corpus = corpus_slice(np.fromfile(tokens_dir / "train.bin", dtype=np.uint16), corpus_tokens)
    starts = np.random.default_rng(seed).integers(0, len(corpus) - prompt_len, size=num)
    generator = torch.Generator(device).manual_seed(seed)
    t0, pieces = time.perf_counter(), [corpus]
    meta = {"modality": "text", "eos": None}  # fixed-length continuations; eos is appended below
    for b, i in enumerate(tqdm(range(0, num, batch_size), desc="text batches", mininterval=10)):
        idx = starts[i: i + batch_size, None] + np.arange(prompt_len)[None]
        prompts = torch.from_numpy(corpus[idx].astype(np.int64)).to(device)
        cont, _ = sample_batch(model, prompts, new_tokens, meta, 1.0, 1.0 if b % 2 else 0.0, generator)
        cont = cont.cpu()
        rows = torch.cat([prompts.cpu(), cont, torch.full((len(cont), 1), eos)], 1)
        pieces.append(rows.flatten().numpy().astype(np.uint16))
    out.mkdir(parents=True, exist_ok=True)
    np.concatenate(pieces).tofile(out / "train.bin")
    (out / "heldout.bin").write_bytes((tokens_dir / "heldout.bin").read_bytes())
    return {"target": str(target), "num": num, "prompt_len": prompt_len, "new_tokens": new_tokens,
            "corpus_tokens": int(len(corpus)), "sample_tokens": int(sum(len(p) for p in pieces[1:])),
            "seconds": round(time.perf_counter() - t0, 1), "device": device}


def build(target: Path, out: Path, num: int, guidance: float, temperature: float, data: Path | None,
          batch_size: int, heldout_fraction: float, device: str, seed: int) -> dict:
    model, card = zoo.load_token_lm(target, device=device)
    meta = card.to_dict()  # the recipes read the card as the JSON object the token data also has
    seq_len = int(meta["seq_len"])
    prompts = dataset_prompts(data, num, seed) if data else class_prompts(meta, num)
    generator = torch.Generator(device).manual_seed(seed)
    tokens = np.full((num, seq_len), meta.get("pad", 0), dtype=np.int16)
    mask = np.zeros((num, seq_len - 1), dtype=bool)
    order = sorted(range(num), key=lambda i: len(prompts[i]))  # equal-length prompts share a batch
    t0 = time.perf_counter()
    bar = tqdm(total=num, desc="samples", mininterval=10)
    i = 0
    while i < num:
        length = len(prompts[order[i]])
        rows = [r for r in order[i: i + batch_size] if len(prompts[r]) == length]
        batch = torch.stack([prompts[r] for r in rows]).to(device)
        allowed = prompt_masks(model, meta, [prompts[r] for r in rows])  # the masks decoding applies
        cont, scored = sample_batch(model, batch, seq_len - length, meta, guidance, temperature, generator, allowed)
        for j, r in enumerate(rows):
            seq = torch.cat([prompts[r], cont[j].cpu()]).numpy()
            tokens[r, : len(seq)] = seq
            mask[r, length - 1: length - 1 + int(scored[j])] = True  # targets from position `length` on
        i += len(rows)
        bar.update(len(rows))
    bar.close()
    split = (np.random.default_rng(seed + 1).random(num) < heldout_fraction).astype(np.int8)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "tokens.npz", tokens=tokens, mask=mask, split=split)
    info = {"target": str(target), "num": num, "guidance": guidance, "temperature": temperature,
            "prompts": str(data) if data else "balanced classes", "seed": seed,
            "seconds": round(time.perf_counter() - t0, 1), "device": device}
    new_meta = {**meta, "condition_dropout": 0.0, "train_sequences": int((split == 0).sum()),
                "heldout_sequences": int(split.sum()), "samples": info}
    (out / "meta.json").write_text(json.dumps(new_meta, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Sample token sequences from a target for on-policy distillation.")
    ap.add_argument("--target", type=Path, required=True, help="image/speech model folder with multispec.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--num", type=int, default=65536)
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--data", type=Path, help="token dataset whose condition prefixes prompt the target")
    ap.add_argument("--text", type=Path, help="text token folder (train.bin, heldout.bin): text mode")
    ap.add_argument("--prompt-len", type=int, default=64, help="text mode: prompt tokens")
    ap.add_argument("--new-tokens", type=int, default=192, help="text mode: sampled tokens per prompt")
    ap.add_argument("--corpus-tokens", type=int, help="text mode: keep this many corpus tokens (64 even chunks)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--heldout-fraction", type=float, default=0.02)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.temperature <= 0:
        raise SystemExit("--temperature must be > 0 (sampling)")
    if args.text:
        info = build_text(args.target, args.text, args.out, args.num, args.prompt_len, args.new_tokens,
                          args.batch_size, args.device, args.seed, args.corpus_tokens)
        print(json.dumps(info))
        (args.out / "samples.json").write_text(json.dumps(info, indent=1) + "\n")
        return
    info = build(args.target, args.out, args.num, args.guidance, args.temperature, args.data,
                 args.batch_size, args.heldout_fraction, args.device, args.seed)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
