"""Benchmark bookkeeping shared by the modality benchmarks: rotated method order, per-method totals
of :class:`~multispec.stats.DecodingStats`, speed columns, markdown tables and the speed-quality
sweep plot. No modality here."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from multispec.stats import DecodingStats


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
                "tokens_per_s": round(self.new_tokens / self.wall_s, 1),
                "tau": round(self.new_tokens / self.steps, 3),
                "acceptance": None if self.drafted == 0 else round(self.accepted / self.drafted, 3),
                "moved_mass_per_token": round(self.moved_mass / self.new_tokens, 4)}


def markdown_table(rows: list[dict], columns) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join("—" if r[c] is None else str(r[c]) for c in columns) + " |\n"
                          for r in rows)


def save_sweep_plot(rows: list[dict], path, metrics, families, title: str, label=lambda row: row["method"]) -> None:
    """PNG: speedup against each quality metric, one line per rule family (``row["rule"]``), sorted by
    speed; ``families`` is a list of (rule, marker); the exact rule is drawn as points only."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2))
    for ax, metric in zip(axes, metrics):
        for family, marker in families:
            pts = sorted((r for r in rows if r["rule"] == family and r[metric] is not None),
                         key=lambda r: r["speedup"])
            ax.plot([r["speedup"] for r in pts], [r[metric] for r in pts], marker=marker,
                    linestyle="-" if family != "exact" else "none", label=family)
            for r in pts:
                ax.annotate(label(r), (r["speedup"], r[metric]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel("wall-clock speedup over plain AR")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
