"""How much of an unmasked target sample decoding's masks forbid: the waste of target sampling without masks.

    python -m models.recipes.masked_out image|speech [--num N] [--guidance S] [--temperature T]
                                        [--max-new-tokens L] [--seed 0] [--out FILE.json]

Until target sampling applied decoding's masks (:func:`models.recipes.decoding_masks.prompt_masks`),
it sampled from the whole vocabulary: a class or null id inside an image grid, a code of the wrong
codebook, a phone the prompt lacks or an eos mid-frame in speech. This samples ``num`` sequences from
the bundled target that way (``sample_batch`` with no mask: image under the on-policy recipe's
guidance 3 at temperature 1 with balanced class prompts; speech reading held-out sentences) and
reports the share of sampled tokens decoding forbids, of sequences holding at least one, and the
probability mass the unmasked sampler put outside the mask (the expected share, from the guided
teacher's logits over the samples). ``--masked`` samples as decoding does instead: the mass then is
what an unmasked distillation teacher asks a drafter to put on forbidden ids in the contexts
decoding visits. Speech counts are also given per slot of a frame (aligned: index, phone, codes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from models import zoo
from models.recipes.decoding_masks import prompt_masks
from models.recipes.target_samples import class_prompts, sample_batch
from models.recipes.token_lm import GuidedTeacher
from multispec.guidance import allowed_at


def speech_prompts(meta: dict, num: int) -> list[torch.Tensor]:
    """The first ``num`` held-out sentences as the model's prompts [P] (phones need flite)."""
    from modalities.speech.generation import SpeechModels
    lines = zoo.SPEECH_PROMPTS.read_text().splitlines()[:num]
    speech = SpeechModels(None, None, meta)
    return [speech.encode(json.loads(line)["text"])[0] for line in lines]


def frame_period(meta: dict) -> int:
    """Tokens per speech frame (its slots); 1 for image grids (one kind of position)."""
    if meta.get("modality") != "speech":
        return 1
    from modalities.speech.generation import make_layout
    return make_layout(meta).tokens_per_frame


@torch.inference_mode()
def audit_batch(model, meta: dict, prompts: torch.Tensor, new_tokens: int, guidance: float, temperature: float,
                generator: torch.Generator, masked: bool = False) -> dict:
    """Sample ``prompts`` [B, P] without decoding's masks (with them if ``masked``); count the sampled
    tokens they forbid and the mass the unmasked sampler puts outside them, in all and per slot."""
    masks = prompt_masks(model, meta, list(prompts))
    cont, lengths = sample_batch(model, prompts, new_tokens, meta, guidance, temperature, generator,
                                 masks if masked else None)
    P, L = prompts.shape[1], cont.shape[1]
    rows = torch.cat([prompts, cont], 1)  # [B, P + L]
    allowed = allowed_at(masks, torch.arange(P, P + L), rows[:, P - 1: P + L - 1]).expand(len(rows), L, -1)
    scored = torch.arange(L)[None] < lengths[:, None]  # [B, L]
    bad = ~allowed.gather(-1, cont[..., None])[..., 0] & scored
    teacher = GuidedTeacher(model, meta.get("unconditional_prefix") or [], guidance)  # unmasked
    logits = teacher(input_ids=rows[:, :-1]).logits[:, -L:]  # the rows that predicted cont
    outside = (torch.softmax(logits / temperature, -1) * ~allowed).sum(-1)  # [B, L]
    slot = (torch.arange(L) % frame_period(meta)).expand(len(rows), L)
    out = {"tokens": int(scored.sum()), "forbidden_tokens": int(bad.sum()), "sequences": len(rows),
           "sequences_with_forbidden": int(bad.any(1).sum()), "mass_outside": float(outside[scored].sum())}
    for k in range(frame_period(meta)):
        here = scored & (slot == k)
        out |= {f"slot{k}_tokens": int(here.sum()), f"slot{k}_forbidden": int((bad & here).sum()),
                f"slot{k}_mass_outside": float(outside[here].sum())}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modality", choices=["image", "speech"])
    ap.add_argument("--num", type=int, default=256)
    ap.add_argument("--guidance", type=float, help="default: image 3 (the on-policy recipe), speech 1")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=400, help="speech: cap per sentence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--masked", action="store_true", help="sample with decoding's masks (as target sampling "
                    "now does) and report only the unmasked target's mass outside them")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    model, card = zoo.load(f"{args.modality}-target")
    meta = card.to_dict()  # the recipes read the card as the JSON object the token data also has
    guidance = args.guidance if args.guidance is not None else 3.0 if args.modality == "image" else 1.0
    generator, t0, totals = torch.Generator().manual_seed(args.seed), time.perf_counter(), {}
    if args.modality == "image":
        batches = [torch.stack(class_prompts(meta, args.num))]
        new_tokens = int(meta["seq_len"]) - 1
    else:  # one sentence per batch: prompts differ in length
        batches = [p[None] for p in speech_prompts(meta, args.num)]
        new_tokens = args.max_new_tokens
    for batch in batches:
        for key, value in audit_batch(model, meta, batch, new_tokens, guidance, args.temperature, generator,
                                      args.masked).items():
            totals[key] = totals.get(key, 0) + value
    report = {"target": f"{args.modality}-target", "guidance": guidance, "temperature": args.temperature,
              "masked": args.masked, "seed": args.seed, **totals,
              "forbidden_token_share": totals["forbidden_tokens"] / totals["tokens"],
              "sequence_share": totals["sequences_with_forbidden"] / totals["sequences"],
              "expected_forbidden_share": totals["mass_outside"] / totals["tokens"],
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
