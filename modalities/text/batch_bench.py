"""Throughput against batch size: plain decoding and speculative methods at batch 1, 2, 4, 8, 16.

The same prompts are decoded at every batch size (in groups of b, left-padded, one
:func:`multispec.generate` call per group, greedy); at each batch size the methods run group by
group with their order rotated. Reported: new tokens per second of wall time, the speedup over plain
at the same batch size, τ and acceptance; ``hf-plain`` is Hugging Face's batched greedy decoding
(the reference for the cost of multispec's row threads); methods suffixed ``+policy`` run with a measured
:class:`~multispec.batch_policy.BatchPolicy`, which caps the draft length at what pays at the live
batch size. Every output is checked against plain at the same batch size.
"""
from __future__ import annotations

import json
import pathlib
import time

import torch
from tqdm import tqdm

import multispec
from multispec import compat
from multispec.batch_policy import BatchPolicy
from multispec.batching import left_pad
from multispec.methods import DraftModelConfig, EagleConfig, LayerSkipConfig, PromptLookupConfig

from .generation import encode_prompt, make_drafter

CONFIGS = {"draft": DraftModelConfig(), "layerskip": LayerSkipConfig(), "lookup": PromptLookupConfig(),
           "eagle": EagleConfig()}
METHODS = ("plain", "hf-plain", "draft", "draft+policy", "layerskip", "layerskip+policy", "lookup", "lookup+policy",
           "eagle", "eagle+policy")
DEFAULT_METHODS = tuple(m for m in METHODS if not m.startswith("layerskip"))  # a draft model where there is one


def _batches(encoded: list[torch.Tensor], size: int, pad: int):
    for start in range(0, len(encoded), size):
        yield left_pad(encoded[start: start + size], pad)


def run_batch_bench(target, draft, tokenizer, prompts: list[str], batch_sizes=(1, 2, 4, 8, 16), methods=METHODS,
                    max_new_tokens: int = 64, head=None, progress: bool = True) -> dict:
    methods = [m for m in methods if (draft is not None or not m.startswith("draft"))
               and (head is not None or not m.startswith("eagle"))]
    base = {m.split("+")[0] for m in methods} - {"plain", "hf-plain"}
    drafters = {m: make_drafter(CONFIGS[m], target, draft, head) for m in base}
    policies = {}
    if any(m.endswith("+policy") for m in methods):
        forward = BatchPolicy.measure(target).forward_seconds
        probe = encode_prompt(prompts[0], tokenizer)
        for m in base:
            skip = drafters.get("layerskip")  # drafts through a CachedLM over the target's kept layers
            model = {"draft": draft, "layerskip": None if skip is None else skip.lm.model}.get(m)
            row_seconds = 0.0
            if model is None:  # drafted row by row: its measured drafting time per drafted token, one sequence
                stats = multispec.generate(target, probe, drafter=drafters[m], max_new_tokens=32).stats
                row_seconds = stats.draft_s / max(1, stats.drafted)
            policies[m] = BatchPolicy(forward, BatchPolicy.measure(model).forward_seconds if model is not None else None,
                                      row_draft_seconds=row_seconds)
    encoded = [encode_prompt(p, tokenizer) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    warm_ids, warm_mask = next(_batches(encoded[:2], 2, pad))
    multispec.generate(target, warm_ids, attention_mask=warm_mask, max_new_tokens=4)  # warm-up
    rows = []
    bar = tqdm(total=len(batch_sizes) * len(methods), desc="bench batch", disable=not progress)
    for size in batch_sizes:
        totals = {m: {"seconds": 0.0, "new_tokens": 0, "steps": 0, "drafted": 0, "accepted": 0, "identical": 0,
                      "groups": 0} for m in methods}
        for i, (ids, mask) in enumerate(_batches(encoded, size, pad)):
            order = methods[i % len(methods):] + methods[: i % len(methods)]
            outputs = {}
            for m in order:
                name = m.split("+")[0]
                policy = policies.get(name) if m.endswith("+policy") else None
                start = time.perf_counter()
                if m == "hf-plain":  # Hugging Face's own batched greedy decoding, the reference
                    with torch.inference_mode():
                        sequences = target.generate(ids, attention_mask=mask, generation_config=compat.hf_greedy_config(
                            target, max_new_tokens, pad_token_id=pad))
                    stats = {"new_tokens": (sequences.shape[1] - ids.shape[1]) * ids.shape[0],
                             "steps": (sequences.shape[1] - ids.shape[1]) * ids.shape[0], "drafted": 0, "accepted": 0}
                else:
                    out = multispec.generate(target, ids, attention_mask=mask, drafter=drafters.get(name),
                                             max_new_tokens=max_new_tokens, pad_token_id=pad, batch_policy=policy)
                    sequences, stats = out.sequences, {k: getattr(out.stats, k) for k in ("new_tokens", "steps",
                                                                                         "drafted", "accepted")}
                seconds = time.perf_counter() - start
                outputs[m] = sequences
                t = totals[m]
                t["seconds"] += seconds
                for key in ("new_tokens", "steps", "drafted", "accepted"):
                    t[key] += stats[key]
            for m in methods:
                totals[m]["identical"] += int(torch.equal(outputs[m], outputs["plain"]))
                totals[m]["groups"] += 1
        for m in methods:
            t = totals[m]
            rows.append({"batch": size, "method": m, "tokens_per_s": t["new_tokens"] / t["seconds"],
                         "speedup": totals["plain"]["seconds"] / t["seconds"],
                         "tau": t["new_tokens"] / t["steps"] if t["steps"] else 0.0,
                         "acceptance_rate": t["accepted"] / t["drafted"] if t["drafted"] else None,
                         "identical_to_plain": f"{t['identical']}/{t['groups']}", "seconds": t["seconds"],
                         "new_tokens": t["new_tokens"]})
            bar.update(1)
    bar.close()
    return {"max_new_tokens": max_new_tokens, "prompts": len(prompts), "batch_sizes": list(batch_sizes),
            "threads": torch.get_num_threads(), "dtype": str(target.dtype),
            "policy_forward_seconds": next(iter(policies.values())).forward_seconds if policies else None,
            "policy_row_draft_seconds": {m: p.row_draft_seconds for m, p in policies.items()},
            "rows": rows}


def markdown(report: dict) -> str:
    methods = list(dict.fromkeys(r["method"] for r in report["rows"]))
    lines = [f"tokens/s (speedup over plain at the same batch; τ) — {report['prompts']} prompts, "
             f"{report['max_new_tokens']} new tokens, greedy, {report['threads']} threads, {report['dtype']}", "",
             "| batch | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for size in report["batch_sizes"]:
        cells = []
        for m in methods:
            r = next(r for r in report["rows"] if r["batch"] == size and r["method"] == m)
            cells.append(f"{r['tokens_per_s']:.1f} ({r['speedup']:.2f}x; τ {r['tau']:.2f}; ={r['identical_to_plain']})")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(report: dict, directory, title: str = "") -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_batch.json").write_text(json.dumps(report, indent=2))
    (directory / "bench_batch.md").write_text(markdown(report) + "\n")
    methods = list(dict.fromkeys(r["method"] for r in report["rows"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        rows = [r for r in report["rows"] if r["method"] == m]
        style = "--" if m.endswith("+policy") else "-"
        left.plot([r["batch"] for r in rows], [r["tokens_per_s"] for r in rows], style, marker="o", label=m)
        right.plot([r["batch"] for r in rows], [r["speedup"] for r in rows], style, marker="o", label=m)
    for ax, label in ((left, "new tokens / s"), (right, "speedup over plain (same batch)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    right.axhline(1.0, color="black", linewidth=0.8)
    left.legend(fontsize=8)
    fig.suptitle(title or "throughput against batch size")
    fig.tight_layout()
    fig.savefig(directory / "throughput.png", dpi=120)
    plt.close(fig)
    return directory
