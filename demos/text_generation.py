"""Text demo: plain decoding, the best exact methods and a relaxed one on the bundled pair, streamed.

Greedy: plain, the draft model and prompt lookup (exact: the same text as plain, checked here).
Sampled at T = 0.7 with one seed: plain sampling and the draft model under Medusa's typical
acceptance (relaxed: it also accepts drafts the target finds typical; the moved probability mass is
reported). Every speedup is measured in this run against plain decoding at the same temperature.
Writes the texts and the table to ``runs/demo/text/``. Runs on a tiny *random* pair when the
bundled models are missing (it says so: gibberish, and speedups mean little).

    python demos/text_generation.py [--max-new-tokens 64] [--prompt "..."] [--out runs/demo/text]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from modalities.report import MethodTally
from modalities.text import generate_text, load_pair, stream_text
from multispec.methods import DraftModelConfig, Method, PromptLookupConfig, TypicalConfig

PROMPTS = ["def fibonacci(n):\n    ", "And God said, Let there be"]


@dataclass(frozen=True)
class DemoRun:
    method: Method
    temperature: float = 0.0
    baseline: str = "plain"  # the row this one's speedup is measured against

    @property
    def name(self) -> str:
        return self.method.name


RUNS = (
    DemoRun(Method(name="plain")),
    DemoRun(Method(DraftModelConfig(), name="draft model (exact)")),
    DemoRun(Method(PromptLookupConfig(), name="prompt lookup (exact)")),
    DemoRun(Method(name="plain T=0.7"), 0.7, baseline="plain T=0.7"),
    DemoRun(Method(DraftModelConfig(), TypicalConfig(), name="draft + typical T=0.7 (relaxed)"), 0.7,
            baseline="plain T=0.7"),
)


def load_models():
    try:
        from models import zoo
        target, tokenizer = zoo.load("text-target")
        draft, _ = zoo.load("text-draft")
        return target, draft, tokenizer, "bundled text-target / text-draft"
    except (ImportError, AttributeError, KeyError, FileNotFoundError):
        from models.recipes.tiny_random import save_pair
        paths = save_pair(tempfile.mkdtemp(prefix="multispec-tiny-"))
        target, draft, tokenizer = load_pair(paths["target"], paths["draft"])
        return target, draft, tokenizer, "TINY RANDOM models (no bundled models installed): gibberish text"


def run(out: Path, prompts=PROMPTS, max_new_tokens: int = 64, seed: int = 0) -> list[Path]:
    target, draft, tokenizer, label = load_models()
    print(f"text: {label}; {len(prompts)} prompts, {max_new_tokens} new tokens each", flush=True)
    tallies = {run.name: MethodTally(run.method) for run in RUNS}
    texts = []
    for prompt in prompts:
        generate_text(prompt, target, tokenizer, max_new_tokens=4, stop_at_eos=False)  # warm-up
        reference = None
        for method in RUNS:
            generator = torch.Generator().manual_seed(seed)
            stream = stream_text(prompt, target, tokenizer, method=method.method, draft=draft,
                                 temperature=method.temperature, max_new_tokens=max_new_tokens, stop_at_eos=False,
                                 generator=generator)
            text = tallies[method.name].timed(lambda s=stream: ("".join(s), s.stats))
            if method.temperature == 0 and method.method.drafter is None:
                reference = text
            same = " (identical to plain)" if method.temperature == 0 and text == reference else ""
            print(f"--- {method.name}{same} ---\n{prompt}{text}\n", flush=True)
            texts.append(f"## {method.name}{same}\n\n```\n{prompt}{text}\n```\n")
    rows = []
    for method in RUNS:
        row = tallies[method.name].speed_columns(tallies[method.baseline].wall_s)
        rows.append(f"| {method.name} | {row['speedup']:.2f}x | {row['tokens_per_s']} | {row['tau']:.2f} | "
                    f"{'—' if row['acceptance'] is None else format(row['acceptance'], '.0%')} | "
                    f"{row['moved_mass_per_token']:.3f} |")
    table = "\n".join(["| method | speedup | tok/s | τ | acceptance | moved mass/token |",
                       "|---|---|---|---|---|---|", *rows])
    print(table, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "outputs.md").write_text("\n".join(texts))
    (out / "results.md").write_text(f"{label}; threads {torch.get_num_threads()}\n\n{table}\n")
    return [out / "outputs.md", out / "results.md"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", action="append", help="prompt(s) to decode (default: one prose, one code)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("runs/demo/text"))
    args = parser.parse_args()
    from transformers.utils import logging
    logging.disable_progress_bar()
    files = run(args.out, args.prompt or PROMPTS, args.max_new_tokens)
    print(f"wrote {', '.join(map(str, files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
