"""Speed against quality for speech decoding methods: same sentences, seeds and models, one run.

Every method speaks every sentence with the same seed; methods take turns sentence by sentence
(rotated order) so drift in machine speed is shared. Reported per method: wall-clock speedup over
plain AR, τ, acceptance, TV mass moved by relaxation, pocketsphinx WER of the decoded audio against
the input text, the log-mel L1 distance to plain decoding's output with the same seed (over the
common frames) and the length ratio, and whether the tokens equal plain decoding's.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from modalities import report
from modalities.report import MethodTally, rotated

from .generation import SpeechModels, generate_codes


@dataclass(frozen=True)
class MethodSpec:
    name: str
    drafter: str = "plain"
    acceptance: str = "exact"
    tolerance: float | tuple[float, ...] = 0.1  # β or δ; a tuple gives one β per codebook level
    k: int | tuple[int, ...] = 3  # top-k; a tuple gives one k per codebook level
    confidence: float = 0.0  # the draft stops after a token the drafter gave q(x) below this
    num_draft_tokens: int = 4  # γ, tokens drafted per step
    min_ratio: float = 0.0  # top-k only: a tolerated token also needs p(x) >= min_ratio · max p


DEFAULT_METHODS = (
    MethodSpec("plain"),
    MethodSpec("draft", "draft"),
    MethodSpec("draft+topk k=2", "draft", "topk", k=2),
    MethodSpec("draft+topk k=4", "draft", "topk", k=4),
    MethodSpec("draft+topk k=8", "draft", "topk", k=8),
    # one k per codebook level (coarse/residual); 256 = the whole residual codebook: the drafter's code
    MethodSpec("draft+topk k=4/16", "draft", "topk", k=(4, 16)),
    MethodSpec("draft+topk k=4/256", "draft", "topk", k=(4, 256)),
    MethodSpec("draft+additive β=0.3", "draft", "additive", tolerance=0.3),
    MethodSpec("draft+neighbors δ=0.2", "draft", "neighbors", tolerance=0.2),
    MethodSpec("lookup", "lookup"),
    MethodSpec("lookup+topk k=4", "lookup", "topk", k=4),
)
# selectable with --methods: the draft stops after a token with q(x) < 0.25; more per-level settings
EXTRA_METHODS = (
    MethodSpec("draft stop@0.25", "draft", confidence=0.25),
    MethodSpec("draft stop@0.25+topk k=4", "draft", "topk", k=4, confidence=0.25),
    MethodSpec("draft+topk k=2/256", "draft", "topk", k=(2, 256)),
    MethodSpec("draft+additive β=0.1/1", "draft", "additive", tolerance=(0.1, 1.0)),
    MethodSpec("draft+topk k=3/16", "draft", "topk", k=(3, 16)),
    MethodSpec("draft+topk k=4/16 ρ=0.1", "draft", "topk", k=(4, 16), min_ratio=0.1),
    MethodSpec("draft+topk k=4/16 ρ=0.25", "draft", "topk", k=(4, 16), min_ratio=0.25),
    MethodSpec("draft+topk k=8/16 ρ=0.25", "draft", "topk", k=(8, 16), min_ratio=0.25),
    MethodSpec("draft+topk k=4/8", "draft", "topk", k=(4, 8)),
    MethodSpec("draft+topk k=2/16", "draft", "topk", k=(2, 16)),
    MethodSpec("draft+topk k=1/16", "draft", "topk", k=(1, 16)),
    MethodSpec("draft γ=6", "draft", num_draft_tokens=6),
    MethodSpec("draft+topk k=4/16 γ=6", "draft", "topk", k=(4, 16), num_draft_tokens=6),
    MethodSpec("draft+topk k=2/16 γ=6", "draft", "topk", k=(2, 16), num_draft_tokens=6),
    MethodSpec("draft+topk k=4/16 γ=8", "draft", "topk", k=(4, 16), num_draft_tokens=8),
)
WITH_JACOBI = DEFAULT_METHODS[:2] + (MethodSpec("sjd", "sjd"), MethodSpec("sjd+topk k=4", "sjd", "topk", k=4))
QUICK_METHODS = (DEFAULT_METHODS[0], DEFAULT_METHODS[1], DEFAULT_METHODS[3])


def select_methods(names: str) -> tuple[MethodSpec, ...]:
    """The default methods named in ``names`` (comma-separated), plain first (the baseline)."""
    known = {spec.name: spec for spec in DEFAULT_METHODS + EXTRA_METHODS + WITH_JACOBI}
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {', '.join(known)}")
    return (known["plain"],) + tuple(known[name] for name in wanted if name != "plain")


def run(models: SpeechModels, sentences: list[str], methods=DEFAULT_METHODS, *, temperature: float | None = None,
        top_k: int | None = None, seed: int = 0, max_seconds: float = 6.0,
        progress: bool = True) -> list[MethodTally]:
    """Speak every sentence with every method; one tally per method, ``outputs`` = SpeechSample."""
    tallies = [MethodTally(spec) for spec in methods]
    for j, text in enumerate(tqdm(sentences, desc="sentences", disable=not progress, mininterval=5)):
        for m in rotated(len(methods), j):
            spec = methods[m]

            def one(spec=spec, text=text, j=j):
                sample = generate_codes(models, text, spec.drafter, spec.acceptance, temperature=temperature,
                                        top_k=top_k, max_seconds=max_seconds, tolerance=spec.tolerance, k=spec.k,
                                        confidence_threshold=spec.confidence,
                                        num_draft_tokens=spec.num_draft_tokens, min_ratio=spec.min_ratio,
                                        generator=torch.Generator().manual_seed(seed * 1_000_003 + j))
                return sample, sample.stats
            tallies[m].timed(one)
    return tallies


def log_mel_distance(models: SpeechModels, frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |log-mel difference| over the frames both decodes have (codec log-mel, no vocoder)."""
    n = min(frames.shape[0], reference.shape[0])
    if n == 0:
        return float("nan")
    return float((models.codec.dequantize(frames[:n]) - models.codec.dequantize(reference[:n])).abs().mean())


def score(models: SpeechModels, results: list[MethodTally], sentences: list[str], wer: bool = True,
          audio_dir: Path | None = None) -> list[dict]:
    from .wer import corpus_wer, transcribe

    plain = results[0].outputs
    rows = []
    for tally in results:
        hyps = []
        for i, sample in enumerate(tally.outputs):
            wave = models.codec.decode(sample.frames) if sample.frames.shape[0] else torch.zeros(1600)
            if audio_dir is not None and i < 4:
                import soundfile
                audio_dir.mkdir(parents=True, exist_ok=True)
                name = tally.spec.name.split()[0].replace("+", "_")
                soundfile.write(audio_dir / f"{name}_{i}.wav", wave.numpy(), models.codec.sample_rate)
            hyps.append(transcribe(wave) if wer else "")
        outputs = tally.outputs
        distances = [log_mel_distance(models, a.frames, b.frames) for a, b in zip(outputs, plain)]
        lengths = sum(a.frames.shape[0] for a in outputs) / max(1, sum(b.frames.shape[0] for b in plain))
        rows.append({
            "method": tally.spec.name, **report.spec_columns(tally.spec),
            "sentences": len(outputs), **tally.speed_columns(results[0].wall_s),
            "wer": round(corpus_wer(zip(sentences, hyps)), 4) if wer else None,
            "log_mel_l1_vs_plain": round(sum(distances) / len(outputs), 4), "length_ratio": round(lengths, 3),
            "identical_to_plain": sum(torch.equal(a.tokens, b.tokens) for a, b in zip(outputs, plain)),
        })
    return rows


COLUMNS = ("method", "speedup", "tokens_per_s", "tau", "acceptance", "moved_mass_per_token", "wer", "log_mel_l1_vs_plain",
           "length_ratio", "identical_to_plain")


def markdown_table(rows: list[dict]) -> str:
    return report.markdown_table(rows, COLUMNS)


def save_sweep_plot(rows: list[dict], path: Path) -> None:
    """Speedup against WER and log-mel distance to plain, one line per rule family."""
    report.save_sweep_plot(rows, path, ("wer", "log_mel_l1_vs_plain"),
                           (("topk", "o"), ("additive", "s"), ("neighbors", "D"), ("exact", "^")),
                           "speech decoding: speed against quality (pocketsphinx WER, codec log-mel)")


def run_report(models: SpeechModels, sentences: list[str], out: Path, *, temperature: float | None = None,
               top_k: int | None = None, seed: int = 0, quick: bool = False, wer: bool = True,
               methods=None, max_seconds: float = 6.0) -> dict:
    """Run, score and write results.json / results.md / sweep.png / example WAVs under ``out``."""
    started = time.time()
    methods = methods or (QUICK_METHODS if quick else DEFAULT_METHODS)
    temperature = models.default_temperature if temperature is None else temperature
    results = run(models, sentences, methods, temperature=temperature, top_k=top_k, seed=seed,
                  max_seconds=max_seconds)
    rows = score(models, results, sentences, wer=wer, audio_dir=out / "wav")
    settings = {"sentences": len(sentences), "temperature": temperature, "top_k": top_k, "seed": seed,
                "max_seconds": max_seconds,
                "threads": torch.get_num_threads(), "wall_s": round(time.time() - started, 1),
                "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    save_sweep_plot(rows, out / "sweep.png")
    return {"settings": settings, "rows": rows}
