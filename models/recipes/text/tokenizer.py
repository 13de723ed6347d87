"""Train the bundled byte-level BPE tokenizer and encode the corpus splits to token files.

Reads ``runs/text/corpus/{train,heldout}.txt`` and the corpus manifest (see ``text_corpus``),
trains a GPT-2-style byte-level BPE (vocabulary 8192; ``<|endoftext|>`` = id 0 is EOS, BOS and
the document separator, ``<|pad|>`` = id 1) on the training documents only, saves it as a
``PreTrainedTokenizerFast`` directory, checks the exact round trip on every held-out document,
and writes ``{train,heldout}.bin``: uint16 token ids, each document preceded by EOS, plus a final
EOS. No normaliser and no added BOS, so ``decode(encode(x)) == x`` for any string without the
special tokens.

    python -m models.recipes.text.tokenizer [--corpus runs/text/corpus] [--out runs/text]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.recipes.text.corpus import SPLITS, split_documents
from models.recipes.presets import EOS_ID, EOS_TOKEN, PAD_ID, PAD_TOKEN, VOCAB_SIZE


@dataclass(frozen=True)
class TokenizerConfig:
    corpus_dir: Path = Path("runs/text/corpus")
    manifest: Path = Path("models/data/text/corpus_manifest.json")
    tokenizer_dir: Path = Path("runs/text/tokenizer")
    tokens_dir: Path = Path("runs/text/tokens")
    vocab_size: int = VOCAB_SIZE
    min_frequency: int = 2


def train_tokenizer(train_docs: list[str], vocab_size: int, min_frequency: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on the given documents."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_docs, trainer=trainer, length=len(train_docs))
    if tok.token_to_id(EOS_TOKEN) != EOS_ID or tok.token_to_id(PAD_TOKEN) != PAD_ID:
        raise RuntimeError("special token ids moved; models.recipes.presets assumes eos=0, pad=1")
    return tok


def wrap(tok):
    """The ``transformers`` fast tokenizer around a ``tokenizers.Tokenizer``."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        unk_token=None, clean_up_tokenization_spaces=False, model_max_length=1024)


def load_tokenizer(path: str | Path):
    """Load a saved tokenizer directory the way users will: ``AutoTokenizer``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def round_trip_failures(hf_tok, docs: list[str]) -> list[int]:
    """Indices of documents for which ``decode(encode(doc)) != doc``."""
    bad = []
    for i, doc in enumerate(docs):
        ids = hf_tok(doc, add_special_tokens=False)["input_ids"]
        if hf_tok.decode(ids, skip_special_tokens=False) != doc:
            bad.append(i)
    return bad


def encode_split(tok, docs: list[str]) -> tuple[np.ndarray, list[int]]:
    """uint16 stream ``[EOS, doc0..., EOS, doc1..., EOS]`` and the token count per document."""
    encs = tok.encode_batch(docs, add_special_tokens=False)
    lengths = [len(e.ids) for e in encs]
    out = np.empty(sum(lengths) + len(docs) + 1, dtype=np.uint16)
    pos = 0
    for e in encs:
        out[pos] = EOS_ID
        out[pos + 1:pos + 1 + len(e.ids)] = e.ids
        pos += 1 + len(e.ids)
    out[pos] = EOS_ID
    return out, lengths


def build(cfg: TokenizerConfig) -> dict:
    """Train, save, check and encode; returns the token statistics added to the manifest."""
    manifest = json.loads(cfg.manifest.read_text(encoding="utf-8"))
    by_split = {}
    for split in SPLITS:
        path = cfg.corpus_dir / manifest["files"][split]
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `python -m models.recipes.text.corpus` first")
        by_split[split] = split_documents(path.read_text(encoding="utf-8"), manifest, split)
    flat = {s: [d for docs in by_split[s].values() for d in docs] for s in SPLITS}

    t0 = time.perf_counter()
    tok = train_tokenizer(flat["train"], cfg.vocab_size, cfg.min_frequency)
    hf_tok = wrap(tok)
    hf_tok.save_pretrained(str(cfg.tokenizer_dir))
    print(f"trained BPE ({tok.get_vocab_size()} tokens) in {time.perf_counter() - t0:.0f}s "
          f"-> {cfg.tokenizer_dir}", flush=True)

    loaded = load_tokenizer(cfg.tokenizer_dir)
    bad = round_trip_failures(loaded, flat["heldout"])
    print(f"round trip on {len(flat['heldout'])} held-out documents: {len(bad)} failures",
          flush=True)
    for i in bad[:5]:
        print(f"  failure in held-out document {i}: {flat['heldout'][i][:80]!r}")

    stats: dict = {"vocab_size": tok.get_vocab_size(), "eos_id": EOS_ID, "pad_id": PAD_ID,
                   "round_trip_failures_heldout": len(bad), "splits": {}, "sources": {}}
    cfg.tokens_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        t0 = time.perf_counter()
        ids, lengths = encode_split(tok, flat[split])
        ids.tofile(cfg.tokens_dir / f"{split}.bin")
        stats["splits"][split] = {"tokens": int(ids.size), "file_bytes": int(ids.nbytes)}
        i = 0
        for name, docs in by_split[split].items():
            n_tok = sum(lengths[i:i + len(docs)])
            n_bytes = sum(len(d.encode("utf-8")) for d in docs)
            i += len(docs)
            src = stats["sources"].setdefault(name, {})
            src[split] = {"tokens": n_tok, "bytes_per_token": round(n_bytes / max(n_tok, 1), 3)}
        print(f"{split:8s} {ids.size:10,d} tokens ({ids.nbytes / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.0f}s -> {cfg.tokens_dir / (split + '.bin')}", flush=True)
    manifest["tokens"] = stats
    cfg.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train the BPE tokenizer and encode the corpus.")
    ap.add_argument("--corpus", type=Path, default=TokenizerConfig.corpus_dir)
    ap.add_argument("--manifest", type=Path, default=TokenizerConfig.manifest)
    ap.add_argument("--out", type=Path, default=Path("runs/text"),
                    help="writes OUT/tokenizer/ and OUT/tokens/{train,heldout}.bin")
    ap.add_argument("--threads", type=int, default=1, help="tokenizers (rayon) threads")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))  # read when rayon starts
    stats = build(TokenizerConfig(corpus_dir=args.corpus, manifest=args.manifest,
                                  tokenizer_dir=args.out / "tokenizer",
                                  tokens_dir=args.out / "tokens"))
    for name, s in stats["sources"].items():
        print(f"  {name:14s} " + "  ".join(f"{k} {v['tokens']:,d} tok ({v['bytes_per_token']} B/tok)"
                                           for k, v in s.items()))


if __name__ == "__main__":
    main()
