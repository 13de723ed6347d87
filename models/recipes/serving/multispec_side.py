"""multispec's own figures for the comparison with :mod:`models.recipes.serving.vllm_check`: the same
target, the same prompts, an EAGLE head (or Medusa heads) drafting a fixed chain of k tokens, greedy, eos ignored;
reports drafts, drafted and accepted tokens, acceptance per position, whether every output equals
Hugging Face greedy, and the speedup over multispec's plain decoding.

    python -m models.recipes.serving.multispec_side --target smollm2-135m-instruct --head HEAD \\
        --prompts models/data/text/spec_bench_question.jsonl --out runs/export/multispec.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--method", choices=["eagle3", "medusa"], default="eagle3")
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--num-speculative-tokens", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import multispec
    from modalities.text.loading import load_model, load_tokenizer
    from models import zoo
    from models.feature_heads import load_head, load_medusa
    from models.recipes.serving.vllm_check import save_report, select_prompts
    from multispec.feature_drafters import Eagle, Medusa

    folder = zoo.resolve(args.target)
    target, tokenizer = load_model(folder, "target"), load_tokenizer(folder)
    k = args.num_speculative_tokens
    if args.method == "medusa":
        drafter = Medusa(load_medusa(zoo.resolve(args.head), target), num_draft_tokens=k, adaptive=False,
                         max_draft_tokens=k)
    else:
        drafter = Eagle(load_head(zoo.resolve(args.head), target), num_draft_tokens=k, adaptive=False,
                        max_draft_tokens=k)
    prompts = [tokenizer(p, return_tensors="pt", add_special_tokens=False).input_ids
               for p in select_prompts(args.prompts, tokenizer, args.num_prompts)]
    totals = {"plain_s": 0.0, "eagle_s": 0.0, "steps": 0, "drafted": 0, "accepted": 0, "new_tokens": 0,
              "identical_to_hf": 0}
    per_position = [0] * k
    config = multispec.compat.hf_greedy_config(target, args.max_tokens)
    for ids in prompts:
        start = time.perf_counter()
        multispec.generate(target, ids, max_new_tokens=args.max_tokens)
        totals["plain_s"] += time.perf_counter() - start
        start = time.perf_counter()
        out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=args.max_tokens)
        totals["eagle_s"] += time.perf_counter() - start
        with torch.inference_mode():
            reference = target.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
        totals["identical_to_hf"] += int(torch.equal(out.sequences, reference))
        for name in ("steps", "drafted", "accepted", "new_tokens"):
            totals[name] += getattr(out.stats, name)
        for accepted in out.stats.accepted_per_step:
            for position in range(min(accepted, k)):
                per_position[position] += 1
    report = {"target": str(folder), "head": str(args.head), "method": args.method, "prompts": len(prompts), "max_tokens": args.max_tokens,
              "k": k, **totals, "accepted_per_position": per_position,
              "acceptance_rate": totals["accepted"] / max(1, totals["drafted"]),
              "mean_acceptance_length": totals["new_tokens"] / max(1, totals["steps"]),
              "speedup": totals["plain_s"] / totals["eagle_s"], "threads": args.threads}
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
