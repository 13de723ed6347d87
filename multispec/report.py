"""Benchmark bookkeeping shared by the modality benchmarks: rotated method order, per-method totals
of :class:`~multispec.stats.DecodingStats`, speed columns and markdown tables. No modality here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .stats import DecodingStats


def rotated(num_methods: int, job: int) -> list[int]:
    """Method order for the ``job``-th item: shifted by one each time, so drift is shared."""
    order = list(range(num_methods))
    shift = job % num_methods
    return order[shift:] + order[:shift]


@dataclass
class MethodTally:
    """Totals over one method's runs, plus what each run produced (``outputs``)."""

    spec: object
    outputs: list = field(default_factory=list)
    wall_s: float = 0.0
    steps: int = 0
    new_tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    moved_mass: float = 0.0

    def timed(self, run):
        """Call ``run()`` -> (output, DecodingStats); time it, add its stats, keep its output."""
        t0 = time.perf_counter()
        output, stats = run()
        self.add(stats, time.perf_counter() - t0)
        self.outputs.append(output)
        return output

    def add(self, stats: DecodingStats, wall_s: float) -> None:
        self.wall_s += wall_s
        self.steps += stats.steps
        self.new_tokens += stats.new_tokens
        self.drafted += stats.drafted
        self.accepted += stats.accepted
        self.moved_mass += stats.moved_mass

    def speed_columns(self, baseline_wall_s: float) -> dict:
        """speedup over the baseline's wall clock, τ, acceptance and TV mass moved per token."""
        return {"wall_s": round(self.wall_s, 2), "speedup": round(baseline_wall_s / self.wall_s, 3),
                "tau": round(self.new_tokens / self.steps, 3),
                "acceptance": None if self.drafted == 0 else round(self.accepted / self.drafted, 3),
                "moved_mass_per_token": round(self.moved_mass / self.new_tokens, 4)}


def markdown_table(rows: list[dict], columns) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join("—" if r[c] is None else str(r[c]) for c in columns) + " |\n"
                          for r in rows)
