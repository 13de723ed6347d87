"""Speed against quality for speech decoding methods: same sentences, seeds and models, one run.

Every method speaks every sentence with the same seed; methods take turns sentence by sentence
(rotated order) so drift in machine speed is shared. Reported per method: wall-clock speedup over
plain AR, τ, acceptance, TV mass moved by relaxation, pocketsphinx WER of the decoded audio against
the input text, the log-mel L1 distance to plain decoding's output with the same seed (over the
common frames) and the length ratio, and whether the tokens equal plain decoding's.

The log-mel frames are the codec's own where its codes stand for log-mel (a ``MelCodec``: codes to
log-mel, no vocoder); for other codecs (``HFCodec``) they are the log-mel of the decoded audio,
analysed at 16 kHz by the default ``MelRVQCodec`` front end (80 bands, 100 frames/s). results.json
says which (``settings.log_mel_of``). Works with any ``Codec``; knows nothing of a codec's internals.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from modalities import report
from modalities.report import MethodTally, rotated

from multispec.methods import (AdditiveConfig, DraftModelConfig, JacobiConfig, Method, NeighborhoodConfig,
                               PromptLookupConfig, TopKConfig)

from .codec import MelCodec, MelRVQCodec, MelRVQConfig, check_wave
from .generation import SpeechModels, generate_codes


DRAFT, TOPK = DraftModelConfig(), TopKConfig
STOP = DraftModelConfig(confidence_threshold=0.25)  # the draft stops after a token with q(x) < 0.25
DEFAULT_METHODS = (
    Method(),
    Method(DRAFT),
    Method(DRAFT, TOPK(k=2)),
    Method(DRAFT, TOPK(k=4)),
    Method(DRAFT, TOPK(k=8)),
    # one k per codebook level (coarse/residual); 256 = the whole residual codebook: the drafter's code
    Method(DRAFT, TOPK(k=(4, 16))),
    Method(DRAFT, TOPK(k=(4, 256))),
    Method(DRAFT, AdditiveConfig(beta=0.3)),
    Method(DRAFT, NeighborhoodConfig(delta=0.2)),
    Method(PromptLookupConfig()),
    Method(PromptLookupConfig(), TOPK(k=4)),
)
# selectable with --methods: stopping drafts early, more per-level settings, other draft lengths γ
EXTRA_METHODS = (
    Method(STOP),
    Method(STOP, TOPK(k=4)),
    Method(DRAFT, TOPK(k=(2, 256))),
    Method(DRAFT, AdditiveConfig(beta=(0.1, 1.0))),
    Method(DRAFT, TOPK(k=(3, 16))),
    Method(DRAFT, TOPK(k=(4, 16), min_ratio=0.1)),
    Method(DRAFT, TOPK(k=(4, 16), min_ratio=0.25)),
    Method(DRAFT, TOPK(k=(8, 16), min_ratio=0.25)),
    Method(DRAFT, TOPK(k=(4, 8))),
    Method(DRAFT, TOPK(k=(2, 16))),
    Method(DRAFT, TOPK(k=(1, 16))),
    Method(DraftModelConfig(num_draft_tokens=6)),
    Method(DraftModelConfig(num_draft_tokens=6), TOPK(k=(4, 16))),
    Method(DraftModelConfig(num_draft_tokens=6), TOPK(k=(2, 16))),
    Method(DraftModelConfig(num_draft_tokens=8), TOPK(k=(4, 16))),
)
WITH_JACOBI = DEFAULT_METHODS[:2] + (Method(JacobiConfig()), Method(JacobiConfig(), TOPK(k=4)))
QUICK_METHODS = (DEFAULT_METHODS[0], DEFAULT_METHODS[1], DEFAULT_METHODS[3])


def select_methods(names: str) -> tuple[Method, ...]:
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
                sample = generate_codes(models, text, spec, temperature=temperature, top_k=top_k,
                                        max_seconds=max_seconds, generator=torch.Generator().manual_seed(seed * 1_000_003 + j))
                return sample, sample.stats
            tallies[m].timed(one)
    return tallies


@functools.lru_cache(maxsize=1)
def _audio_front_end() -> MelRVQCodec:
    return MelRVQCodec(MelRVQConfig())  # only its log-mel analysis is used, never its codebooks


def log_mel_of(models: SpeechModels) -> str:
    """Where :func:`log_mel_frames` takes the log-mel from: "codes" (a MelCodec) or "decoded audio"."""
    return "codes" if isinstance(models.codec, MelCodec) else "decoded audio"


def log_mel_frames(models: SpeechModels, frames: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
    """Log-mel [T', D] of one output, from its codes frames [T, K] (MelCodec: T' = T) or else from
    its decoded wave [n] at the codec's sample rate (resampled to 16 kHz, and a wave shorter than
    one analysis window padded with silence to it); [0, D] when there are no frames."""
    if isinstance(models.codec, MelCodec):
        return models.codec.dequantize(frames)
    front_end = _audio_front_end()
    config = front_end.config
    if frames.shape[0] == 0:
        return torch.zeros(0, config.n_mels)
    wave = check_wave(wave, models.codec.sample_rate, config.sample_rate)
    wave = torch.nn.functional.pad(wave, (0, max(0, config.n_fft - wave.numel())))
    return front_end.log_mel(wave, config.sample_rate)


def log_mel_distance(log_mel: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |difference| of log-mel frames [T, D] and [T', D] over the frames both have (nan if none)."""
    n = min(log_mel.shape[0], reference.shape[0])
    if n == 0:
        return float("nan")
    return float((log_mel[:n] - reference[:n]).abs().mean())


def score(models: SpeechModels, results: list[MethodTally], sentences: list[str], wer: bool = True,
          audio_dir: Path | None = None, spectrograms: dict | None = None) -> list[dict]:
    """One row per method; ``results[0]`` is plain decoding, the reference for the distances.
    ``spectrograms`` (when given) receives each method's log-mel of the first sentence."""
    from .wer import corpus_wer, transcribe

    plain, plain_log_mels = results[0].outputs, None
    rows = []
    for tally in results:
        hyps, log_mels = [], []
        for i, sample in enumerate(tally.outputs):
            wave = models.codec.decode(sample.frames) if sample.frames.shape[0] else torch.zeros(1600)
            if audio_dir is not None and i < 4:
                import soundfile
                audio_dir.mkdir(parents=True, exist_ok=True)
                name = tally.spec.name.split()[0].replace("+", "_")
                soundfile.write(audio_dir / f"{name}_{i}.wav", wave.numpy(), models.codec.sample_rate)
            hyps.append(transcribe(wave, models.codec.sample_rate) if wer else "")
            log_mels.append(log_mel_frames(models, sample.frames, wave))
        if plain_log_mels is None:  # the first tally is plain
            plain_log_mels = log_mels
        if spectrograms is not None and log_mels:
            spectrograms[tally.spec.name] = log_mels[0]
        outputs = tally.outputs
        distances = [log_mel_distance(a, b) for a, b in zip(log_mels, plain_log_mels)]
        lengths = sum(a.frames.shape[0] for a in outputs) / max(1, sum(b.frames.shape[0] for b in plain))
        rows.append({
            "method": tally.spec.name, **tally.spec.columns(),
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
                           (("topk", "o"), ("additive", "s"), ("neighborhood", "D"), ("exact", "^")),
                           "speech decoding: speed against quality (pocketsphinx WER, codec log-mel)")


def save_spectrograms(spectrograms: dict, sentence: str, path: Path) -> None:
    """The first sentence's log-mel spectrogram per method, stacked (plain on top), as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(spectrograms), 1, figsize=(9, 2.1 * len(spectrograms)), squeeze=False)
    low = min(float(m.min()) for m in spectrograms.values())
    high = max(float(m.max()) for m in spectrograms.values())
    for ax, (name, log_mel) in zip(axes[:, 0], spectrograms.items()):
        image = log_mel if log_mel.shape[0] < log_mel.shape[1] else log_mel.T  # [mels, frames]
        ax.imshow(image.numpy(), origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
        ax.set_title(name, fontsize=9, loc="left")
        ax.set_ylabel("mel band")
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(f"log-mel spectrograms: {sentence!r}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_report(models: SpeechModels, sentences: list[str], out: Path, *, temperature: float | None = None,
               top_k: int | None = None, seed: int = 0, quick: bool = False, wer: bool = True,
               methods=None, max_seconds: float = 6.0) -> dict:
    """Run, score and write results.json / results.md / sweep.png / spectrograms.png (the first
    sentence per method) / example WAVs under ``out``."""
    started = time.time()
    methods = methods or (QUICK_METHODS if quick else DEFAULT_METHODS)
    temperature = models.default_temperature if temperature is None else temperature
    results = run(models, sentences, methods, temperature=temperature, top_k=top_k, seed=seed,
                  max_seconds=max_seconds)
    spectrograms: dict = {}
    rows = score(models, results, sentences, wer=wer, audio_dir=out / "wav", spectrograms=spectrograms)
    settings = {"sentences": len(sentences), "temperature": temperature, "top_k": top_k, "seed": seed,
                "max_seconds": max_seconds, "codec": type(models.codec).__name__, "log_mel_of": log_mel_of(models),
                "threads": torch.get_num_threads(), "wall_s": round(time.time() - started, 1),
                "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    save_sweep_plot(rows, out / "sweep.png")
    save_spectrograms(spectrograms, sentences[0], out / "spectrograms.png")
    return {"settings": settings, "rows": rows}
