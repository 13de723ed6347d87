"""Benchmark bookkeeping: runs over several seeds pooled into one row per method, and --seeds parsing."""
import json

import pytest

from modalities import report


def row(method, speedup, tau, acceptance, wer):
    return {"method": method, "speedup": speedup, "tau": tau, "acceptance": acceptance, "wer": wer}


def test_pool_seeds_literal():
    runs = {0: [row("plain", 1.0, 1.0, None, 0.5), row("draft", 2.0, 4.0, 0.6, 0.4)],
            1: [row("plain", 1.0, 1.0, None, 0.7), row("draft", 1.5, 3.0, 0.5, 0.6)]}
    plain, draft = report.pool_seeds(runs, ("wer",))
    assert plain == {"method": "plain", "seeds": 2, "speedup": 1.0, "speedup_min": 1.0, "speedup_max": 1.0,
                     "tau": 1.0, "acceptance": None, "wer": 0.6, "wer_per_seed": [0.5, 0.7]}
    assert (draft["speedup"], draft["speedup_min"], draft["speedup_max"]) == (1.75, 1.5, 2.0)
    assert (draft["tau"], draft["acceptance"], draft["wer"]) == (3.5, 0.55, 0.5)


def test_pool_seeds_refuses_mismatched_methods_and_nothing():
    runs = {0: [row("plain", 1, 1, None, 0.5)], 1: [row("draft", 1, 1, None, 0.5)]}
    with pytest.raises(ValueError, match="seed 1 ran other methods than seed 0"):
        report.pool_seeds(runs, ("wer",))
    with pytest.raises(ValueError, match="no seeds"):
        report.pool_seeds({}, ("wer",))


def test_parse_seeds():
    assert report.parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("", "0,a", "1.5"):
        with pytest.raises(ValueError, match="comma-separated integers"):
            report.parse_seeds(bad)
    with pytest.raises(ValueError, match="repeats a seed"):
        report.parse_seeds("1,1")


def test_run_seeds_writes_each_seed_and_the_pooled_table(tmp_path):
    def one_run(seed, out):
        out.mkdir(parents=True)
        return {"rows": [row("plain", 1.0, 1.0, None, 0.1 * (seed + 1)), row("draft", 1.0 + seed, 2.0, 0.5, 0.2)]}
    pooled = report.run_seeds(one_run, [0, 2], tmp_path, ("wer",))
    assert (tmp_path / "seed0").is_dir() and (tmp_path / "seed2").is_dir()
    saved = json.loads((tmp_path / "pooled.json").read_text())
    assert saved["seeds"] == [0, 2] and saved["rows"] == pooled and pooled[1]["speedup"] == 2.0
    assert "| draft | 2 | 2.0 | 1.0 | 3.0 |" in (tmp_path / "pooled.md").read_text()
