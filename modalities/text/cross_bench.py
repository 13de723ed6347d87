"""Cross-vocabulary benchmark: a target and a draft model with different tokenizers, multispec's
:class:`~multispec.cross_vocab.CrossVocabularyDraft` (both modes) against Hugging Face's universal
assisted decoding (``assistant_model`` + ``tokenizer`` + ``assistant_tokenizer``) and plain decoding,
on the same prompts in one interleaved run (method order rotated per prompt), greedy.

Columns as in :mod:`modalities.text.bench` (speedup over multispec plain, τ, acceptance, = plain);
τ for Hugging Face counts the target's forwards (its prefill emits a token too).
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

import multispec
from multispec.cross_vocab import CrossVocabularyDraft

from .bench import ForwardCounter, MethodResult, _add, _run_hf, last_layer, single_step_seconds
from .vocabulary import TokenizerBridge

METHODS = ("plain", "hf-plain", "cross-shared", "cross-text", "hf-universal")


def run_cross_bench(target, target_tokenizer, draft, draft_tokenizer, prompts: list[str], max_new_tokens: int = 64,
                    methods=METHODS, num_draft_tokens: int = 4, progress: bool = True) -> dict:
    """Every method on every prompt (prompts encoded by the target's tokenizer with its BOS); the report
    dict of :func:`modalities.text.bench.markdown_table`."""
    start = time.perf_counter()
    bridge = TokenizerBridge(target_tokenizer, draft_tokenizer, multispec.lm.output_vocab_size(target),
                             multispec.lm.output_vocab_size(draft))
    bridge_s = time.perf_counter() - start
    drafters = {f"cross-{mode}": CrossVocabularyDraft(draft, bridge, mode=mode, num_draft_tokens=num_draft_tokens)
                for mode in ("shared", "text")}

    def ours(drafter):
        def run(ids):
            out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=max_new_tokens)
            return out.sequences, out.stats.steps, out.stats.drafted, out.stats.accepted
        return run

    runners = {"plain": ours(None), **{name: ours(d) for name, d in drafters.items()},
               "hf-plain": lambda ids: _run_hf(target, ids, max_new_tokens),
               "hf-universal": lambda ids: _run_hf(target, ids, max_new_tokens, assistant_model=draft,
                                                   tokenizers=(target_tokenizer, draft_tokenizer))}
    device = next(target.parameters()).device
    encoded = [target_tokenizer(p, return_tensors="pt").input_ids.to(device) for p in prompts]
    for name in methods:  # warm-up
        runners[name](encoded[0][:, :8])
    cost = single_step_seconds(draft) / single_step_seconds(target)
    totals = {m: MethodResult(m) for m in methods}
    counted = last_layer(target)
    bar = tqdm(total=len(encoded) * len(methods), desc="bench cross-vocab", disable=not progress)
    for i, ids in enumerate(encoded):
        order = list(methods[i % len(methods):]) + list(methods[: i % len(methods)])
        outputs, results = {}, {}
        for name in order:
            with ForwardCounter(counted) as calls:
                t0 = time.perf_counter()
                seq, steps, drafted, accepted = runners[name](ids)
                seconds = time.perf_counter() - t0
            outputs[name] = seq
            results[name] = MethodResult(name, seconds, seq.shape[1] - ids.shape[1],
                                         steps if steps is not None else calls.calls, 0, drafted, accepted, 0, 1)
            bar.update(1)
        for name in methods:
            results[name].identical = int(torch.equal(outputs[name], outputs["plain"]))
            _add(totals[name], results[name])
    bar.close()
    plain = totals["plain"]
    return {"max_new_tokens": max_new_tokens, "prompts": len(prompts), "dtype": str(target.dtype),
            "threads": torch.get_num_threads(), "shared_tokens": bridge.shared,
            "draft_vocab": int(bridge.draft_to_target.shape[0]), "target_vocab": bridge.target_vocab_size,
            "bridge_seconds": bridge_s, "draft_target_step_cost": cost,
            "rows": [totals[m].row(plain, cost if m.startswith(("cross", "hf-universal")) else 0.0) for m in methods]}
