"""Fit MelRVQCodec variants on the speech training audio and measure held-out reconstruction.

For each variant (K codebooks, hop) the codec is fitted on the training split and saved under
``{out}/k{K}_hop{hop}``; then, on held-out synthetic sentences and on the real Asterisk prompts,
it reports the log-mel L1 distance to the original (natural-log mel, 80 bands, always measured
at hop 160 so variants compare) and pocketsphinx WER for: the original audio, mel + Griffin-Lim
(the codec without quantisation) and the codec round trip. Results go to ``{out}/eval.json``;
the variant named by ``--default`` is also saved at ``{out}`` itself (what the speech model loads).

    python -m models.recipes.speech.codec [--data runs/speech] [--out runs/speech/codec] [--variants k2_hop320,k3_hop320]

The bundled ``speech-codec`` is the default, ``k2_hop320`` (50 frames/s, 100 tokens/s): it kept
held-out flite speech more intelligible than K=2 at hop 160 (``models/results/speech/codec_eval_v1.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from multiprocessing import Pool
from pathlib import Path

import torch

from modalities.speech.codec import MelRVQCodec, MelRVQConfig
from modalities.speech.wer import corpus_wer, transcribe
from models.recipes.speech.data import load_split


def _wave(int16) -> torch.Tensor:
    return torch.from_numpy(int16.astype("float32") / 32768.0)


def _pick(rows: list, n: int, min_words: int = 3, max_words: int = 12) -> list:
    """n clips chosen by a hash of their id (deterministic, spread over the split)."""
    ok = [r for r in rows if min_words <= len(r[0]["text"].split()) <= max_words]
    return sorted(ok, key=lambda r: hashlib.sha256(r[0]["id"].encode()).hexdigest())[:n]


def parse_variant(name: str) -> tuple[int, int]:
    k, hop = name.split("_")
    return int(k.lstrip("k")), int(hop.removeprefix("hop"))


def _transcribe_all(waves: list[torch.Tensor], processes: int) -> list[str]:
    torch.set_num_threads(1)
    with Pool(processes, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return pool.map(transcribe, waves, chunksize=4)


def evaluate(data: Path, out: Path, variants: list[str], n_syn: int, n_real: int, fit_clips: int,
             gl_iters: int, processes: int, seed: int) -> dict:
    train = load_split(data, "train")[:fit_clips]
    sets = {"synthetic": _pick(load_split(data, "heldout"), n_syn)}
    if (data / "real.npy").exists() and n_real:
        sets["real"] = _pick(load_split(data, "real"), n_real)
    metric = MelRVQCodec(MelRVQConfig())  # reference log-mel at hop 160 for every variant
    waves: dict[tuple[str, str], list[torch.Tensor]] = {}  # (set, condition) -> waves
    for s, rows in sets.items():
        waves[(s, "original")] = [_wave(w) for _, w in rows]
    results: dict = {"fit": {}, "sets": {s: {"clips": len(r), "words": sum(len(x[0]["text"].split()) for x in r),
                                            "seconds": round(sum(len(w) for _, w in r) / 16000, 1)}
                                        for s, r in sets.items()}}
    train_waves = [_wave(w) for _, w in train]
    for name in variants:
        k, hop = parse_variant(name)
        cfg = MelRVQConfig(num_codebooks=k, hop_length=hop, griffin_lim_iters=gl_iters)
        t0 = time.perf_counter()
        codec = MelRVQCodec.fit(train_waves, cfg, generator=torch.Generator().manual_seed(seed))
        results["fit"][name] = {"seconds": round(time.perf_counter() - t0, 1), "clips": len(train_waves),
                                "tokens_per_second": k * 16000 / hop}
        codec.save(out / name)
        print(f"fitted {name} in {results['fit'][name]['seconds']} s", flush=True)
        for s in sets:
            orig = waves[(s, "original")]
            waves[(s, name)] = [codec.decode(codec.encode(w, 16000)) for w in orig]
            if (s, f"mel+GL hop{hop}") not in waves:
                waves[(s, f"mel+GL hop{hop}")] = [codec.mel_to_wave(codec.log_mel(w)) for w in orig]
    keys = list(waves)
    flat = [w for key in keys for w in waves[key]]
    t0 = time.perf_counter()
    hyps = _transcribe_all(flat, processes)
    print(f"transcribed {len(flat)} clips in {time.perf_counter() - t0:.0f} s", flush=True)
    i = 0
    for s, cond in keys:
        refs = [r["text"] for r, _ in sets[s]]
        hyp = hyps[i:i + len(refs)]
        i += len(refs)
        l1 = []
        for a, b in zip(waves[(s, "original")], waves[(s, cond)]):
            n = min(len(a), len(b))
            l1.append((metric.log_mel(a[:n]) - metric.log_mel(b[:n])).abs().mean().item())
        results.setdefault("table", {}).setdefault(s, {})[cond] = {
            "log_mel_l1": round(sum(l1) / len(l1), 4), "wer": round(corpus_wer(zip(refs, hyp)), 4)}
        results.setdefault("transcripts", {}).setdefault(s, {})[cond] = hyp
    results["references"] = {s: [r["text"] for r, _ in rows] for s, rows in sets.items()}
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("runs/speech"))
    ap.add_argument("--out", type=Path, default=Path("runs/speech/codec"))
    ap.add_argument("--variants", default="k2_hop320")
    ap.add_argument("--default", default="k2_hop320", help="variant also saved at --out itself")
    ap.add_argument("--num-synthetic", type=int, default=32)
    ap.add_argument("--num-real", type=int, default=32)
    ap.add_argument("--fit-clips", type=int, default=2000, help="training clips used to fit (frames subsampled)")
    ap.add_argument("--gl-iters", type=int, default=32)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    variants = args.variants.split(",")
    res = evaluate(args.data, args.out, variants, args.num_synthetic, args.num_real, args.fit_clips,
                   args.gl_iters, args.processes, args.seed)
    if args.default in variants:
        MelRVQCodec.from_pretrained(args.out / args.default).save(args.out)
        res["default"] = args.default
    (args.out / "eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print("| set | condition | log-mel L1 | WER |\n|---|---|---|---|")
    for s, rows in res["table"].items():
        for cond, m in rows.items():
            print(f"| {s} | {cond} | {m['log_mel_l1']:.3f} | {m['wer']:.3f} |")
    print(json.dumps(res["fit"]))


if __name__ == "__main__":
    main()
