"""Build the speech data set for the bundled speech models from offline Debian packages.

Text: short modern-English sentences (3-10 words, letters and basic punctuation only) cut from
fortunes and the Python 3.11 documentation sources (the loaders of ``models.recipes.text.corpus``),
normalised and deduplicated; a sentence goes to the held-out split when a salted hash of its
text falls below ``heldout_fraction``. Audio: each sentence synthesised with flite's ``slt`` voice
(one speaker, 16 kHz mono, 2 processes); ``--voices slt,awb,rms,kal16`` gives sentence i of each
split the voice i mod 4 instead. Real speech for evaluation: the Asterisk English prompts (one
professional speaker, 8 kHz resampled to 16 kHz with torchaudio).

Per split ``{split}.npy`` holds all clips as one int16 array and ``{split}.jsonl`` one line per
clip: ``{"id", "text", "source", "start", "length"}`` (samples into the array). The manifest
records sources, licences, counts, hours and the sha256 of every built file.

    python -m models.recipes.speech.data [--out runs/speech] [--num-sentences 6000]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FLITE_VOICES = ("slt", "awb", "rms", "kal16")  # Debian flite's 16 kHz voices (kal is 8 kHz)
SPLITS = ("train", "heldout", "real")
ASTERISK_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


@dataclass(frozen=True)
class SpeechDataConfig:
    out_dir: Path = Path("runs/speech")
    manifest: Path = Path("models/data/speech/data_manifest.json")
    num_sentences: int = 14000  # training sentences; held-out ones come on top
    max_heldout: int = 256
    heldout_fraction: float = 0.03
    salt: str = "multispec-speech-v1"
    voices: tuple[str, ...] = ("slt",)  # flite 16 kHz voices, taken in turn sentence by sentence
    min_words: int = 3
    max_words: int = 10
    processes: int = 2
    # more prose for training only; the held-out sentences stay fortunes and Python docs (modern)
    train_only_sources: tuple[str, ...] = ("jargon", "devil", "kjv")

    def __post_init__(self):
        if not self.voices:
            raise ValueError(f"no flite voice given; choose from {', '.join(FLITE_VOICES)}")
        for voice in self.voices:
            if voice not in FLITE_VOICES:
                raise ValueError(f"flite voice {voice!r} is not a 16 kHz voice; choose from {', '.join(FLITE_VOICES)}")


# ---- text -------------------------------------------------------------------------------------

_ALLOWED = re.compile(r"^[A-Z][A-Za-z ,.'?!;-]*[.?!]$")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z])")
_RST_DIRECTIVE = re.compile(r"^\s*(\.\.|:[a-z]+:|[=\-~^*#+\"`]{3,}\s*$)")


def normalise(text: str) -> str:
    """Straighten quotes and dashes, collapse whitespace."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u2014", " - ")
    text = text.replace("--", " - ")
    return " ".join(text.split())


def sentences(text: str, min_words: int, max_words: int) -> Iterator[str]:
    """Sentences of one block of prose that pass the letters-and-basic-punctuation filter."""
    for sent in _SENTENCE_END.split(normalise(text)):
        words = sent.split()
        if min_words <= len(words) <= max_words and _ALLOWED.match(sent) and "  " not in sent:
            if not re.search(r"\b(e\.g|i\.e|etc|vs|Mr|Dr|St)\.", sent):  # abbreviations read badly
                yield sent


def _paragraphs_rst(text: str) -> Iterator[str]:
    """Prose paragraphs of a reStructuredText file: indented blocks (code, directive bodies),
    directives and heading underlines are dropped."""
    para: list[str] = []
    for line in text.split("\n") + [""]:
        if not line.strip() or line.startswith((" ", "\t")) or _RST_DIRECTIVE.match(line):
            if para:
                yield " ".join(para)
            para = []
        else:
            para.append(line.strip())


def candidate_sentences(cfg: SpeechDataConfig) -> list[tuple[str, str]]:
    """(source, sentence) pairs, deduplicated case-insensitively, in source order."""
    from models.recipes.text import corpus as tc
    for name in ("fortunes", "python_docs") + cfg.train_only_sources:
        src = tc.SOURCES[name]
        missing = [p for p in src.required_paths if not Path(p).exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} not found: apt-get install -y {' '.join(src.packages)}")
    seen, out = set(), []
    verse_numbers = re.compile(r"^\d+\s+", re.M)
    texts = {"fortunes": lambda: (d.text for d in tc.load_fortunes()),
             "python_docs": lambda: (p for d in tc.load_python_docs() for p in _paragraphs_rst(d.text)),
             "jargon": lambda: (d.text for d in tc.load_jargon()),
             "devil": lambda: (d.text for d in tc.load_devil()),
             "kjv": lambda: (verse_numbers.sub("", d.text) for d in tc.load_kjv())}
    streams = ((name, texts[name]()) for name in ("fortunes", "python_docs") + cfg.train_only_sources)
    for name, blocks in streams:
        for block in blocks:
            for sent in sentences(block, cfg.min_words, cfg.max_words):
                key = sent.lower()
                if key not in seen:
                    seen.add(key)
                    out.append((name, sent))
    return out


def _hash01(salt: str, text: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}:{text.lower()}".encode()).digest()[:8], "big") / 2**64


def split_sentences(cands: list[tuple[str, str]], cfg: SpeechDataConfig) -> dict[str, list[tuple[str, str]]]:
    """Held-out by hash; the training subset is the ``num_sentences`` with the smallest second
    hash, so it is a deterministic random sample that grows by adding sentences."""
    held = [c for c in cands if _hash01(cfg.salt, c[1]) < cfg.heldout_fraction
            and c[0] not in cfg.train_only_sources]
    train = [c for c in cands if _hash01(cfg.salt, c[1]) >= cfg.heldout_fraction]
    train = sorted(train, key=lambda c: _hash01(cfg.salt + ":pick", c[1]))[:cfg.num_sentences]
    held = sorted(held, key=lambda c: _hash01(cfg.salt + ":pick", c[1]))[:cfg.max_heldout]
    return {"train": train, "heldout": held}


# ---- audio ------------------------------------------------------------------------------------

def parse_phone_times(printed: str) -> list[tuple[str, float]]:
    """flite ``-psdur`` output ("pau:0.164 hh:0.255 ...") -> [(phone, end time in s)]."""
    out = []
    for item in printed.split():
        phone, _, end = item.rpartition(":")
        out.append((phone, float(end)))
    return out


def _synth(job: tuple[str, str]) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """int16 [n] samples of flite's rendering of one sentence, and its phones with end times."""
    import soundfile as sf
    voice, text = job
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        run = subprocess.run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(path)], check=True,
                             capture_output=True, text=True)
        wave, sr = sf.read(path, dtype="int16")
    if sr != SAMPLE_RATE or wave.ndim != 1:
        raise ValueError(f"flite returned {sr} Hz, shape {wave.shape}; expected {SAMPLE_RATE} Hz mono")
    return wave, parse_phone_times(run.stdout)


def synthesize(texts: list[str], cfg: SpeechDataConfig) -> list[tuple[np.ndarray, list]]:
    if shutil.which("flite") is None:
        raise FileNotFoundError("flite not found: apt-get install -y flite")
    out, t0 = [], time.perf_counter()
    # Threads, not a fork()ed pool: each job waits on its own flite process, and forking a process
    # that already runs torch's threads can deadlock the children.
    with ThreadPoolExecutor(max(1, cfg.processes)) as pool:
        jobs = [(cfg.voices[i % len(cfg.voices)], t) for i, t in enumerate(texts)]
        for result in pool.map(_synth, jobs):
            out.append(result)
            if len(out) % 1000 == 0:
                print(f"synthesised {len(out)}/{len(texts)} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def load_asterisk() -> list[tuple[str, str, np.ndarray]]:
    """(id, transcript, int16 [n] at 16 kHz) for the Asterisk prompts whose transcript is plain
    prose (no bracketed tone descriptions, digits or symbols); [] with a note if not installed."""
    import soundfile as sf
    import torch
    import torchaudio
    if not ASTERISK_DIR.is_dir() or not ASTERISK_TXT.exists():
        print("Asterisk prompts not found (apt-get install -y asterisk-core-sounds-en-wav "
              "asterisk-core-sounds-en); skipping the real-speech split")
        return []
    out = []
    for line in gzip.decompress(ASTERISK_TXT.read_bytes()).decode("utf-8", "replace").splitlines():
        if line.startswith(";") or ": " not in line:
            continue
        key, text = line.split(": ", 1)
        text = normalise(text).rstrip(". ") + "."
        path = ASTERISK_DIR / f"{key.strip()}.wav"
        if not path.exists() or not re.fullmatch(r"[A-Z][A-Za-z ,.'?!-]*", text) or len(text.split()) < 2:
            continue
        wave, sr = sf.read(path, dtype="float32")
        if wave.ndim != 1:
            continue
        wave = torchaudio.functional.resample(torch.from_numpy(wave), sr, SAMPLE_RATE).numpy()
        out.append((key.strip(), text, (np.clip(wave, -1, 1) * 32767).round().astype(np.int16)))
    return out


def _write_split(out_dir: Path, split: str, rows: list[tuple], phones: list | None = None) -> dict:
    """rows: (id, text, source, int16 [n]); writes {split}.npy and {split}.jsonl (with each clip's
    ``phones``, [[phone, end s], ...], where given)."""
    starts = np.cumsum([0] + [len(r[3]) for r in rows])
    audio = np.concatenate([r[3] for r in rows]) if rows else np.zeros(0, np.int16)
    np.save(out_dir / f"{split}.npy", audio)
    with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
        for i, ((rid, text, source, wave), start) in enumerate(zip(rows, starts)):
            record = {"id": rid, "text": text, "source": source, "start": int(start), "length": len(wave)}
            if phones is not None:
                record["phones"] = phones[i]
            f.write(json.dumps(record) + "\n")
    return {"clips": len(rows), "hours": round(len(audio) / SAMPLE_RATE / 3600, 4),
            "words": sum(len(r[1].split()) for r in rows)}


def load_split(data_dir: str | Path, split: str) -> list[tuple[dict, np.ndarray]]:
    """(record, int16 [n] view) per clip of a built split."""
    data_dir = Path(data_dir)
    audio = np.load(data_dir / f"{split}.npy", mmap_mode="r")
    rows = [json.loads(line) for line in open(data_dir / f"{split}.jsonl", encoding="utf-8")]
    return [(r, audio[r["start"]:r["start"] + r["length"]]) for r in rows]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(cfg: SpeechDataConfig) -> dict:
    from models.recipes.text import corpus as tc
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cands = candidate_sentences(cfg)
    splits = split_sentences(cands, cfg)
    stats, t0 = {}, time.perf_counter()
    for split in ("train", "heldout"):
        synthesised = synthesize([s for _, s in splits[split]], cfg)
        rows = [(f"{split}-{i:05d}", s, src, w) for i, ((src, s), (w, _)) in enumerate(zip(splits[split], synthesised))]
        stats[split] = _write_split(cfg.out_dir, split, rows, [p for _, p in synthesised])
    synth_s = time.perf_counter() - t0
    real = load_asterisk()
    stats["real"] = _write_split(cfg.out_dir, "real", [(k, t, "asterisk", w) for k, t, w in real])
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(cfg.out_dir.glob("*")) if p.suffix in (".npy", ".jsonl")}
    manifest = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "sample_rate": SAMPLE_RATE, "format": "int16 PCM, one .npy per split, offsets in .jsonl",
        "sources": {
            "fortunes": {"packages": ["fortunes"], "licence": "BSD-style (fortune-mod); quotations of mixed origin",
                         "sentences": sum(src == "fortunes" for split in splits.values() for src, _ in split)},
            "python_docs": {"packages": ["python3.11-doc"], "licence": "PSF-2.0 (Python documentation)",
                            "sentences": sum(src == "python_docs" for split in splits.values() for src, _ in split)},
            **{name: {"packages": list(tc.SOURCES[name].packages), "licence": tc.SOURCES[name].licence,
                      "training_only": True, "sentences": sum(src == name for src, _ in splits["train"])}
               for name in cfg.train_only_sources},
            **{f"flite_{v}": {"packages": ["flite"], "licence": f"BSD-style (CMU flite, {v} voice)"}
               for v in cfg.voices},
            "asterisk": {"packages": ["asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"],
                         "licence": "CC-BY-SA-3.0 (Allison Smith / Digium)", "clips": stats["real"]["clips"]},
        },
        "apt_packages": ["flite", "fortunes", "python3.11-doc", "asterisk-core-sounds-en-wav", "asterisk-core-sounds-en",
                         *(p for name in cfg.train_only_sources for p in tc.SOURCES[name].packages)],
        "candidate_sentences": len(cands), "splits": stats,
        "synthesis_seconds": round(synth_s, 1), "files": files,
    }
    cfg.manifest.parent.mkdir(parents=True, exist_ok=True)
    cfg.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=SpeechDataConfig.out_dir)
    ap.add_argument("--manifest", type=Path, default=SpeechDataConfig.manifest)
    ap.add_argument("--num-sentences", type=int, default=SpeechDataConfig.num_sentences)
    ap.add_argument("--processes", type=int, default=SpeechDataConfig.processes)
    ap.add_argument("--voices", default=",".join(SpeechDataConfig.voices),
                    help=f"comma-separated flite voices, taken in turn ({', '.join(FLITE_VOICES)}; default slt, "
                         "the bundled models' one speaker)")
    args = ap.parse_args(argv)
    try:
        cfg = SpeechDataConfig(out_dir=args.out, manifest=args.manifest, num_sentences=args.num_sentences,
                               processes=args.processes,
                               voices=tuple(v.strip() for v in args.voices.split(",") if v.strip()))
    except ValueError as error:
        ap.error(f"--voices: {error}")
    m = build(cfg)
    print(json.dumps({"candidates": m["candidate_sentences"], "splits": m["splits"],
                      "synthesis_seconds": m["synthesis_seconds"]}, indent=2))


if __name__ == "__main__":
    main()
