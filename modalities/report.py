"""Benchmark bookkeeping shared by the modality benchmarks: rotated method order, per-method totals
of :class:`~multispec.stats.DecodingStats`, speed columns, markdown tables, the speed-quality
sweep plot, and runs over several seeds pooled into one table. No modality here."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def pool_seeds(runs: dict[int, list[dict]], quality: tuple[str, ...]) -> list[dict]:
    """One row per method over several seeds' runs ({seed: rows}, the same methods in each, as
    ``run_report`` writes them): mean, lowest and highest speedup, mean τ and acceptance, and the
    mean of each ``quality`` column. Every seed scores the same items, so the mean of per-seed
    corpus WERs (or class accuracies) is the pooled one."""
    seeds = sorted(runs)
    if not seeds:
        raise ValueError("no seeds to pool")
    names = [row["method"] for row in runs[seeds[0]]]
    for seed in seeds[1:]:
        if [row["method"] for row in runs[seed]] != names:
            raise ValueError(f"seed {seed} ran other methods than seed {seeds[0]}; pool runs of one method list")

    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 4) if values else None

    pooled = []
    for i, name in enumerate(names):
        rows = [runs[seed][i] for seed in seeds]
        speedups = [row["speedup"] for row in rows]
        pooled.append({"method": name, "seeds": len(seeds), "speedup": mean(speedups),
                       "speedup_min": min(speedups), "speedup_max": max(speedups),
                       "tau": mean(row["tau"] for row in rows), "acceptance": mean(row["acceptance"] for row in rows),
                       **{column: mean(row[column] for row in rows) for column in quality},
                       **{f"{column}_per_seed": [row[column] for row in rows] for column in quality}})
    return pooled


POOLED_COLUMNS = ("method", "seeds", "speedup", "speedup_min", "speedup_max", "tau", "acceptance")


def add_seeds_argument(parser) -> None:
    """A benchmark's ``--seeds`` option (see :func:`run_seeds`)."""
    parser.add_argument("--seeds", help="comma-separated seeds (e.g. 0,1,2,3,4): one run per seed in OUT/seed<S>, "
                        "then pooled.md and pooled.json over them (instead of --seed)")


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; ValueError naming what is not a seed, or a repeated one."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in items if not item.lstrip("-").isdigit()]
    if bad or not items:
        raise ValueError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}")
    seeds = [int(item) for item in items]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds repeats a seed: {text!r}")
    return seeds


def run_seeds(one_run, seeds: list[int], out, quality: tuple[str, ...]) -> list[dict]:
    """``one_run(seed, folder)`` -> a report ({"settings", "rows"}) for each seed in ``out``/seed<S>;
    then the rows pooled over the seeds (:func:`pool_seeds`) written to ``out``/pooled.json and
    pooled.md. Returns the pooled rows."""
    out = Path(out)
    runs = {seed: one_run(seed, out / f"seed{seed}")["rows"] for seed in seeds}
    pooled = pool_seeds(runs, quality)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pooled.json").write_text(json.dumps({"seeds": seeds, "rows": pooled}, indent=1) + "\n")
    (out / "pooled.md").write_text(markdown_table(pooled, POOLED_COLUMNS + quality))
    return pooled
