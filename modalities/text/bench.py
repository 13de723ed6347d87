"""Text benchmark: plain decoding, every multispec drafter and Hugging Face's own speculative methods
on the same models and prompts, in one run, with the method order rotated per prompt.

Reported per method: tokens/s, speedup over plain (total plain time / total method time for the
same number of new tokens), τ (new tokens per target forward), acceptance rate, whether every output
equals plain greedy, and efficiency = speedup / (τ / (1 + f·c)), where f is draft forwards per target
forward and c the measured draft/target single-step cost ratio (so 1.0 means no overhead beyond the
ideal). For Hugging Face methods τ counts all target forwards (its prefill also emits a token).
"""
from __future__ import annotations

import json
import pathlib
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

import multispec
from multispec import compat, timing

from multispec.methods import (DraftModelConfig, DraftTreeConfig, EagleConfig, JacobiConfig, LayerSkipConfig,
                               MedusaConfig, PromptLookupConfig)

from .generation import encode_prompt, make_drafter

ALL_METHODS = ("plain", "hf-plain", "draft", "draft-fixed", "draft-tree", "hf-assisted", "lookup", "lookup-tree",
               "hf-lookup", "layerskip", "hf-early-exit", "jacobi", "eagle", "eagle-tree", "medusa", "medusa-tree")
MODEL_DRAFTERS = ("draft", "draft-fixed", "draft-tree", "hf-assisted")  # methods that need a separate draft model
HEAD_DRAFTERS = ("eagle", "eagle-tree")  # methods that need a trained feature head
MEDUSA_DRAFTERS = ("medusa", "medusa-tree")  # methods that need trained Medusa heads


@dataclass
class MethodResult:
    name: str
    seconds: float = 0.0
    new_tokens: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    drafted: int = 0
    accepted: int = 0
    identical: int = 0
    runs: int = 0
    extra: dict = field(default_factory=dict)

    def row(self, plain: "MethodResult", step_cost_ratio: float) -> dict:
        tau = self.new_tokens / self.target_forwards if self.target_forwards else 0.0
        speedup = plain.seconds / self.seconds if self.seconds else 0.0
        f = self.draft_forwards / self.target_forwards if self.target_forwards else 0.0
        ideal = tau / (1 + f * step_cost_ratio) if tau else 0.0
        return {
            "method": self.name, "tokens_per_s": self.new_tokens / self.seconds if self.seconds else 0.0,
            "speedup": speedup, "tau": tau,
            "acceptance_rate": self.accepted / self.drafted if self.drafted else None,
            "gamma": self.drafted / self.target_forwards if self.drafted and self.target_forwards else None,
            "draft_forwards_per_step": f, "step_cost_ratio": step_cost_ratio,
            "efficiency": speedup / ideal if ideal else None,
            "identical_to_plain": f"{self.identical}/{self.runs}", "seconds": self.seconds,
            "new_tokens": self.new_tokens,
        }


class ForwardCounter:
    """Counts forward calls of a module (a hook; removed on exit)."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda *_: self._tick())
        return self

    def _tick(self):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


def last_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The model's last decoder layer: only a full forward reaches it, so counting its calls counts
    target forwards even where drafts run through the target's own first layers (early exit)."""
    depth = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return module[-1]
    return model


def single_step_seconds(model, context: int = 64, repeats: int = 30, tokens: int = 1) -> float:
    """Median time of one KV-cached forward of ``tokens`` new tokens after ``context`` tokens."""
    return timing.forward_seconds(model, tokens, context, repeats)


def verify_costs(model, sizes=timing.DEFAULT_SIZES, context: int = 200, repeats: int = 10) -> dict[int, float]:
    """The cost of one forward of k new tokens relative to one of a single token, for each k."""
    costs = timing.verify_costs(model, tuple(sizes), context, repeats)
    return {k: float(costs[k]) for k in sizes}


def _run_multispec(target, drafter, ids, max_new_tokens):
    out = multispec.generate(target, ids, drafter=drafter, max_new_tokens=max_new_tokens)
    return out.sequences, out.stats.steps, out.stats.drafted, out.stats.accepted


def _run_hf(target, ids, max_new_tokens, assistant_model=None, tokenizers=None, **kwargs):
    """Hugging Face greedy ``generate`` (``kwargs`` go to its generation config); ``tokenizers``:
    (target's, assistant's) for universal assisted decoding across vocabularies."""
    config = compat.hf_greedy_config(target, max_new_tokens, **kwargs)
    extra = {} if tokenizers is None else {"tokenizer": tokenizers[0], "assistant_tokenizer": tokenizers[1]}
    with torch.inference_mode():
        seq = target.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config,
                              assistant_model=assistant_model, **extra)
    return seq, None, 0, 0


def _add(result: MethodResult, other: MethodResult) -> None:
    for name in ("seconds", "new_tokens", "target_forwards", "draft_forwards", "drafted", "accepted", "identical",
                 "runs"):
        setattr(result, name, getattr(result, name) + getattr(other, name))


def run_bench(target, draft, tokenizer, prompts, methods=ALL_METHODS, max_new_tokens: int = 64,
              layerskip_layers: int | None = None, lookup_tokens: int = 10, gamma: int = 4,
              progress: bool = True, chat: bool | None = None, head=None, eagle_tree: EagleConfig | None = None,
              medusa=None, medusa_tree: MedusaConfig | None = None) -> dict:
    """Run every method on every prompt (order rotated per prompt) and return the report dict.

    ``prompts``: strings, or (category, string) pairs for per-category tables as well.
    ``draft-fixed`` is the draft model at a fixed γ = ``gamma``; ``draft`` uses the adaptive γ.
    ``hf-early-exit`` is Hugging Face's self-speculation from the first ``layerskip_layers`` layers
    (``assistant_early_exit``), the peer of multispec's ``layerskip``. ``chat``: wrap prompts in the
    tokenizer's chat template (None: when it has one). ``eagle`` and ``eagle-tree`` (``eagle_tree``
    settings, default :class:`EagleConfig` with 4 branches) run the trained feature ``head``;
    ``medusa`` and ``medusa-tree`` (``medusa_tree``, default 3 branches) the trained ``medusa`` heads.
    """
    prompts = [p if isinstance(p, tuple) else ("all", p) for p in prompts]
    methods = [m for m in methods if (draft is not None or m not in MODEL_DRAFTERS)
               and (head is not None or m not in HEAD_DRAFTERS) and (medusa is not None or m not in MEDUSA_DRAFTERS)]
    skip_layers = layerskip_layers or max(1, target.config.num_hidden_layers // 4)
    configs = {"draft": DraftModelConfig(), "draft-fixed": DraftModelConfig(num_draft_tokens=gamma, adaptive=False),
               "draft-tree": DraftTreeConfig(branches=4, width=4, max_nodes=16),  # the shape of eagle-tree
               "lookup": PromptLookupConfig(), "lookup-tree": PromptLookupConfig(branches=4),
               "layerskip": LayerSkipConfig(num_layers=skip_layers),
               "jacobi": JacobiConfig(), "eagle": EagleConfig(),
               "eagle-tree": eagle_tree or EagleConfig(branches=4, width=4, max_nodes=16),
               "medusa": MedusaConfig(), "medusa-tree": medusa_tree or MedusaConfig(branches=3, width=3, max_nodes=16)}
    drafters = {m: make_drafter(config, target, draft, medusa if m in MEDUSA_DRAFTERS else head)
                for m, config in configs.items() if m in methods}
    runners = {
        "plain": lambda ids: _run_multispec(target, None, ids, max_new_tokens),
        "hf-plain": lambda ids: _run_hf(target, ids, max_new_tokens),
        "hf-assisted": lambda ids: _run_hf(target, ids, max_new_tokens, assistant_model=draft),
        "hf-lookup": lambda ids: _run_hf(target, ids, max_new_tokens, prompt_lookup_num_tokens=lookup_tokens),
        "hf-early-exit": lambda ids: _run_hf(target, ids, max_new_tokens, assistant_early_exit=skip_layers),
    }
    for name, drafter in drafters.items():
        runners[name] = lambda ids, d=drafter: _run_multispec(target, d, ids, max_new_tokens)
    draft_module = {"draft": draft, "draft-fixed": draft, "draft-tree": draft, "hf-assisted": draft}
    if "layerskip" in drafters:
        draft_module["layerskip"] = drafters["layerskip"].lm.model
    counted = {**draft_module, **{m: head.decoder for m in HEAD_DRAFTERS if m in drafters},
               **{m: medusa for m in MEDUSA_DRAFTERS if m in drafters}}  # a Medusa draft is one call of the heads

    device = next(target.parameters()).device
    encoded = [(category, encode_prompt(p, tokenizer, chat=chat).to(device)) for category, p in prompts]
    for name in methods:  # warm-up
        runners[name](encoded[0][1][:, :8])
    t_target = single_step_seconds(target)
    costs = verify_costs(target)
    cost = {m: single_step_seconds(module) / t_target for m, module in draft_module.items() if module is not None}

    target_layer = last_layer(target)
    per_prompt = []  # (category, {method: MethodResult})
    bar = tqdm(total=len(encoded) * len(methods), desc="bench text", disable=not progress)
    for i, (category, ids) in enumerate(encoded):
        order = methods[i % len(methods):] + methods[: i % len(methods)]
        results, outputs = {}, {}
        for name in order:
            module = counted.get(name)
            with ForwardCounter(target_layer) as t_count, ForwardCounter(module or torch.nn.Identity()) as d_count:
                start = time.perf_counter()
                seq, steps, drafted, accepted = runners[name](ids)
                seconds = time.perf_counter() - start
            results[name] = MethodResult(name, seconds, seq.shape[1] - ids.shape[1],
                                         steps if steps is not None else t_count.calls, d_count.calls, drafted,
                                         accepted, 0, 1)
            outputs[name] = seq
            bar.update(1)
        reference = outputs.get("plain")
        for name, seq in outputs.items():
            results[name].identical = int(reference is not None and torch.equal(seq, reference))
        per_prompt.append((category, results))
    bar.close()

    def table(selected):
        totals = {m: MethodResult(m) for m in methods}
        for _, results in selected:
            for m in methods:
                _add(totals[m], results[m])
        plain = totals.get("plain") or next(iter(totals.values()))
        return [totals[m].row(plain, cost.get(m, 0.0)) for m in methods]

    categories = sorted({c for c, _ in per_prompt})
    report = {"max_new_tokens": max_new_tokens, "prompts": len(prompts), "gamma_fixed": gamma,
              "methods": {m: configs[m].label() for m in drafters},
              "layerskip_layers": skip_layers, "dtype": str(target.dtype),
              "draft_dtype": None if draft is None else str(draft.dtype),
              "threads": torch.get_num_threads(), "target_step_s": t_target, "verify_cost": costs,
              "rows": table(per_prompt)}
    if len(categories) > 1:
        report["by_category"] = {c: table([r for r in per_prompt if r[0] == c]) for c in categories}
    return report


def markdown_table(report: dict) -> str:
    """All prompts, then one table per prompt category when there are several."""
    parts = [_markdown_rows(report["rows"], f"all {report['prompts']} prompts")]
    if report.get("draft_dtype") and report["draft_dtype"] != report.get("dtype"):
        parts.append(f"target {report.get('dtype')}, draft model {report['draft_dtype']}")
    if report.get("verify_cost"):
        costs = report["verify_cost"]
        parts.append("cost of one target forward of k new tokens / one token (200-token context): "
                     + ", ".join(f"k={k}: {v:.2f}" for k, v in costs.items()))
    for category, rows in report.get("by_category", {}).items():
        parts.append(_markdown_rows(rows, category))
    return "\n\n".join(parts)


def _markdown_rows(rows, title: str) -> str:
    def fmt(value, spec):
        return "—" if value is None else format(value, spec)
    lines = [f"**{title}**", "", "| method | tok/s | speedup | τ | acceptance | γ | c | efficiency | = plain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | {r['tau']:.2f} | "
                     f"{fmt(r['acceptance_rate'], '.1%')} | {fmt(r['gamma'], '.2f')} | {r['step_cost_ratio']:.3f} | "
                     f"{fmt(r['efficiency'], '.2f')} | {r['identical_to_plain']} |")
    return "\n".join(lines)


def load_prompts(path, limit: int | None = None) -> list[tuple[str, str]]:
    """(category, prompt) pairs from .jsonl ({"prompt", "category"} or Spec-Bench {"turns", "category"})
    or .txt (one per line, category "all")."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"--prompts: {path} does not exist")
    prompts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            record = json.loads(line)
            text = record["prompt"] if "prompt" in record else record["turns"][0]
            prompts.append((record.get("category", "all"), text))
        else:
            prompts.append(("all", line.replace("\\n", "\n")))
    if not prompts:
        raise ValueError(f"--prompts: {path} holds no prompts")
    if limit:  # the first N of each category, so a short run still covers every kind
        kept, counts = [], {}
        for category, text in prompts:
            counts[category] = counts.get(category, 0) + 1
            if counts[category] <= limit:
                kept.append((category, text))
        prompts = kept
    return prompts


def save_report(report: dict, directory) -> pathlib.Path:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench_text.json").write_text(json.dumps(report, indent=2))
    (directory / "bench_text.md").write_text(markdown_table(report) + "\n")
    return directory
