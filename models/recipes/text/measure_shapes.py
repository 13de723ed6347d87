"""Time one KV-cached decoding step of candidate target/drafter shapes on this CPU.

Random-initialised ``LlamaForCausalLM`` models, batch 1, fp32: prefill a 64-token prompt, then
time single-token forwards that extend the cache. All candidates are timed in interleaved rounds
(a few steps of each in turn, cache reset every round) so that load from other processes on a
shared machine hits them alike; the table reports the median per model. Run it while nothing else
heavy uses the CPU: ``python -m models.recipes.text.measure_shapes [--threads 2] [--rounds 10]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import LlamaForCausalLM

from models.recipes.presets import PRESETS, ModelShape

CANDIDATES: dict[str, ModelShape] = {
    "T-512x6": ModelShape(hidden=512, layers=6, heads=8, kv_heads=4, intermediate=1408),
    "T-384x10": ModelShape(hidden=384, layers=10, heads=6, kv_heads=6, intermediate=1024),
    "T-320x14": ModelShape(hidden=320, layers=14, heads=5, kv_heads=5, intermediate=864),
    "T-384x12": ModelShape(hidden=384, layers=12, heads=6, kv_heads=6, intermediate=768),
    "T-384x12-gqa": ModelShape(hidden=384, layers=12, heads=6, kv_heads=3, intermediate=896),
    "D-256x1": ModelShape(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=768),
    "D-256x1-m512": ModelShape(hidden=256, layers=1, heads=4, kv_heads=4, intermediate=512),
    "D-192x1": ModelShape(hidden=192, layers=1, heads=3, kv_heads=3, intermediate=512),
    "D-256x2": ModelShape(hidden=256, layers=2, heads=4, kv_heads=4, intermediate=768),
    "D-384x1": ModelShape(hidden=384, layers=1, heads=6, kv_heads=6, intermediate=1024),
    "cpuT-256x6": ModelShape(hidden=256, layers=6, heads=4, kv_heads=4, intermediate=704),
    "cpuT-256x8": ModelShape(hidden=256, layers=8, heads=4, kv_heads=4, intermediate=704),
    "cpuD-128x1": ModelShape(hidden=128, layers=1, heads=2, kv_heads=2, intermediate=384),
}


class StepTimer:
    """One random model plus a prompt; ``run(n)`` returns the wall times of n cached steps."""

    def __init__(self, shape: ModelShape, seed: int, prompt_len: int = 64):
        torch.manual_seed(seed)  # weight init only; this is a measurement entry point
        self.model = LlamaForCausalLM(shape.config()).eval()
        gen = torch.Generator().manual_seed(seed)
        self.prompt = torch.randint(2, shape.config().vocab_size, (1, prompt_len), generator=gen)

    @torch.inference_mode()
    def run(self, n: int) -> list[float]:
        out = self.model(input_ids=self.prompt, use_cache=True)
        cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)  # nxt: [1, 1]
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            out = self.model(input_ids=nxt, cache=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            times.append(time.perf_counter() - t0)
            cache = out.cache
        return times


def measure(names: list[str], rounds: int, steps_per_round: int, warmup: int = 3
            ) -> dict[str, float]:
    """Median step time in ms per candidate, rounds interleaved across candidates."""
    timers = {n: StepTimer(CANDIDATES[n], seed=i) for i, n in enumerate(names)}
    times: dict[str, list[float]] = {n: [] for n in names}
    for t in timers.values():
        t.run(warmup)
    for _ in range(rounds):
        for n, t in timers.items():
            times[n] += t.run(steps_per_round)
    return {n: 1000 * statistics.median(v) for n, v in times.items()}


def busy_cpu_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps-per-round", type=int, default=5)
    ap.add_argument("names", nargs="*", default=list(CANDIDATES))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    busy0, own0, wall0 = busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
    ms = measure(args.names, args.rounds, args.steps_per_round)
    others = busy_cpu_seconds() - busy0 - (sum(os.times()[:2]) - own0)
    n_steps = args.rounds * args.steps_per_round
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_steps} steps each; "
          f"other processes used {others:.1f} CPU-s in {time.perf_counter() - wall0:.0f} s")
    print(f"| name | hidden × layers (heads/kv, mlp) | params | bf16 MB | step ms (median of {n_steps}) |")
    print("|---|---|---|---|---|")
    for name in args.names:
        s, n = CANDIDATES[name], CANDIDATES[name].num_params()
        print(f"| {name} | {s.hidden} × {s.layers} ({s.heads}/{s.kv_heads}, {s.intermediate}) "
              f"| {n / 1e6:.2f}M | {2 * n / 1e6:.1f} | {ms[name]:.2f} |")
    for p in PRESETS.values():
        inv = {v: k for k, v in CANDIDATES.items()}
        t, d = inv.get(p.target), inv.get(p.draft)
        if t in ms and d in ms:
            print(f"preset {p.name}: target {t} / draft {d} step cost ratio {ms[t] / ms[d]:.2f}")


if __name__ == "__main__":
    main()
