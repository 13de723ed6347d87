"""Held-out benchmark prompts for the bundled text models: prose and code cut from held-out documents.

    python -m models.recipes.text.prompts   # writes models/data/text/prompts_heldout.jsonl (committed)

Each prompt is cut from a held-out document (never seen in training) at line boundaries: its opening,
or for long documents also windows further in; up to ~600 characters of prose or ~1,200 of code
(code prompts carry more context, as in editing).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from models.recipes.text.corpus import CorpusConfig, split_documents

LIMITS = {"prose": 600, "code": 1200}


def opening(text: str, limit: int) -> str:
    """The document's first lines, at most ``limit`` characters, ending at a line break."""
    head = text[:limit]
    cut = head.rfind("\n")
    return head[: cut + 1] if cut > limit // 3 else head


def windows(doc: str, limit: int, stride: int = 4000) -> list[str]:
    """Openings at the document start and every ``stride`` characters after it (from a line start)."""
    out = [opening(doc, limit)]
    for offset in range(stride, len(doc) - limit, stride):
        start = doc.find("\n", offset) + 1
        if start:
            out.append(opening(doc[start:], limit))
    return out


def build(corpus_dir: Path, manifest_path: Path, per_kind: int = 24, min_chars: int = 200) -> list[dict]:
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    text = (corpus_dir / "heldout.txt").read_text(encoding="utf-8")
    by_source = split_documents(text, manifest, "heldout")
    prompts = []
    for kind in ("prose", "code"):
        pool = [(name, doc) for name, docs in by_source.items() if manifest["sources"][name]["kind"] == kind
                for doc in docs if len(doc) >= min_chars]
        pool.sort(key=lambda item: hashlib.sha256(item[1].encode()).hexdigest())  # deterministic shuffle
        # round-robin over sources so that every source is represented
        sources = sorted({name for name, _ in pool})
        queues = {s: [w for name, doc in pool if name == s for w in windows(doc, LIMITS[kind])] for s in sources}
        while len([p for p in prompts if p["category"] == kind]) < per_kind and any(queues.values()):
            for s in sources:
                if queues[s] and len([p for p in prompts if p["category"] == kind]) < per_kind:
                    prompts.append({"category": kind, "source": s, "prompt": queues[s].pop(0)})
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CorpusConfig.out_dir)
    parser.add_argument("--manifest", type=Path, default=CorpusConfig.manifest)
    parser.add_argument("--out", type=Path, default=Path("models/data/text/prompts_heldout.jsonl"))
    parser.add_argument("--per-kind", type=int, default=24)
    args = parser.parse_args()
    prompts = build(args.corpus, args.manifest, args.per_kind)
    args.out.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
    print(f"{len(prompts)} prompts -> {args.out}")


if __name__ == "__main__":
    main()
