"""Build the text corpus for the bundled text models from offline Debian packages.

Sources: public-domain and permissively licensed prose (KJV Bible, fortunes, Jargon File,
Devil's Dictionary, the Python 3.11 documentation sources) and Python code (the non-test Python
3.11 standard library). Each source yields documents; a document goes to the held-out split when
a salted hash of its id falls below ``heldout_fraction``, so the split is by document and
deterministic. Writes ``{train,heldout}.txt`` (documents separated by ``<|endoftext|>``, grouped by
source in manifest order) and a JSON manifest. Knows nothing about tokenization.

    python -m models.recipes.text.corpus [--out runs/text/corpus] [--manifest models/data/text/corpus_manifest.json]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from models.recipes.presets import EOS_TOKEN, PAD_TOKEN

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Document:
    doc_id: str  # unique within its source; the held-out hash is taken over "source:doc_id"
    text: str


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]  # Debian packages that provide the files
    licence: str
    kind: str  # "prose" or "code"
    load: Callable[[], Iterator[Document]]
    required_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorpusConfig:
    out_dir: Path = Path("runs/text/corpus")
    manifest: Path = Path("models/data/text/corpus_manifest.json")
    heldout_fraction: float = 0.02
    salt: str = "multispec-text-v1"
    separator: str = EOS_TOKEN
    sources: tuple[str, ...] = field(default=("kjv", "fortunes", "jargon", "devil", "python_docs",
                                              "python_stdlib"))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps \t and \n


def clean(text: str) -> str:
    """Normalise newlines, drop control characters (fortune overstrikes, form feeds), strip
    trailing whitespace on each line and around the document."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


# ---- sources ----------------------------------------------------------------------------------

def load_kjv() -> Iterator[Document]:
    """One document per chapter (1,189): a "Book N" header line then "V text" per verse."""
    out = subprocess.run(["bible", "-l100000", "gen1:1-rev22:21"], capture_output=True,
                         text=True, check=True, env={"COLUMNS": "100000", "PATH": "/usr/bin:/bin"})
    title, verses = None, []
    for line in out.stdout.split("\n"):
        if not line.strip():
            continue
        if not line.startswith(" "):  # "Genesis 1", "1 Samuel 3", "Song of Solomon 2"
            if title:
                yield Document(title, title + "\n\n" + "\n".join(verses))
            title, verses = line.strip(), []
        else:
            verses.append(line.strip())
    if title:
        yield Document(title, title + "\n\n" + "\n".join(verses))


FORTUNES_DIR = Path("/usr/share/games/fortunes")


def load_fortunes() -> Iterator[Document]:
    """One document per fortune. The id is the fortune's text, so the ~duplicates that occur in
    several files land in the same split."""
    seen = set()
    for path in sorted(FORTUNES_DIR.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for chunk in re.split(r"\n%\n", "\n" + raw + "\n"):
            text = clean(chunk.strip("%"))
            if text and text not in seen:
                seen.add(text)
                yield Document(text, text)


JARGON_PATH = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
_JARGON_ENTRY = re.compile(r"^   :[^ :][^:]*:")
_JARGON_HEAD = re.compile(r"^(Chapter\s\d+\.|Appendix\s[A-C]\.|Bibliography$|Part\s[IV]+\.)")
_JARGON_INDEX = re.compile(r"^(Glossary$|  [A-Z0-9]$|\s+Part\sII\.\sThe\sJargon\sLexicon$)")


def load_jargon() -> Iterator[Document]:
    """One document per lexicon entry (":headword: ...") or per front/back-matter chapter; the
    table of contents and the per-letter headword indexes are dropped."""
    lines = gzip.decompress(JARGON_PATH.read_bytes()).decode("utf-8").split("\n")
    docs, cur, skipping = [], [], True  # skip the title page and table of contents
    for line in lines:
        entry, head = _JARGON_ENTRY.match(line), _JARGON_HEAD.match(line)
        if entry or head or _JARGON_INDEX.match(line):
            if cur and not skipping:
                docs.append(cur)
            cur, skipping = [line], not (entry or head)
        else:
            cur.append(line)
    if cur and not skipping:
        docs.append(cur)
    for doc in docs:  # NBSPs in headings become spaces; the 3-space body indent is removed
        head = " ".join(doc[0].split())
        yield Document(head, clean(head + "\n" + textwrap.dedent("\n".join(doc[1:]))))


DEVIL_PATH = Path("/usr/share/dictd/devil.dict.dz")
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_int(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def load_devil() -> Iterator[Document]:
    """One document per dictionary entry, located through the dictd index (the 00-database-*
    header entries are skipped)."""
    data = gzip.decompress(DEVIL_PATH.read_bytes())  # dictzip is gzip-compatible
    index = DEVIL_PATH.with_name("devil.index").read_text(encoding="utf-8").splitlines()
    spans = set()
    for row in index:
        word, off, size = row.split("\t")
        if not word.startswith("00"):
            spans.add((_dictd_int(off), _dictd_int(size)))
    for off, size in sorted(spans):
        text = clean(data[off:off + size].decode("utf-8"))
        yield Document(f"{off}:{text.split(',', 1)[0][:60]}", text)


PYDOC_DIR = Path("/usr/share/doc/python3.11/html/_sources")


def load_python_docs() -> Iterator[Document]:
    """One document per reStructuredText source file of the Python 3.11 documentation."""
    for path in sorted(PYDOC_DIR.rglob("*.rst.txt")):
        yield Document(str(path.relative_to(PYDOC_DIR)), clean(path.read_text(encoding="utf-8")))


STDLIB_DIR = Path("/usr/lib/python3.11")
_STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                     "pydoc_data", "config-3.11-x86_64-linux-gnu"}


def load_python_stdlib() -> Iterator[Document]:
    """One document per non-test .py file of Debian's Python 3.11 standard library, without
    generated files (the gencodec.py charmap tables, _sysconfigdata, pydoc_data topics)."""
    for path in sorted(STDLIB_DIR.rglob("*.py")):
        rel = path.relative_to(STDLIB_DIR)
        if set(rel.parts[:-1]) & _STDLIB_SKIP_DIRS or rel.name.startswith(("test_", "_sysconfigdata")):
            continue
        text = path.read_text(encoding="utf-8")
        if "gencodec.py" in text[:2000]:
            continue
        text = clean(text)
        if text:
            yield Document(str(rel), text)


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("kjv", ("bible-kjv", "bible-kjv-text"), "public domain (US; Crown patent in the UK)",
           "prose", load_kjv, ("/usr/bin/bible",)),
    Source("fortunes", ("fortunes",), "BSD-style (fortune-mod); quotations of mixed origin",
           "prose", load_fortunes, (str(FORTUNES_DIR / "fortunes"),)),
    Source("jargon", ("jargon-text",), "public domain (Jargon File 4.4.7)", "prose", load_jargon,
           (str(JARGON_PATH),)),
    Source("devil", ("dict-devil",), "public domain (Bierce, 1911)", "prose", load_devil,
           (str(DEVIL_PATH),)),
    Source("python_docs", ("python3.11-doc",), "PSF-2.0 (Python documentation)", "prose",
           load_python_docs, (str(PYDOC_DIR / "contents.rst.txt"),)),
    Source("python_stdlib", ("libpython3.11-stdlib",), "PSF-2.0 (CPython 3.11 standard library)",
           "code", load_python_stdlib, (str(STDLIB_DIR / "os.py"),)),
)}


def check_installed(sources: list[Source]) -> None:
    """Raise with the apt-get command that installs whatever is missing."""
    missing = [p for s in sources if not all(Path(r).exists() for r in s.required_paths)
               for p in s.packages]
    if missing:
        raise SystemExit("text corpus sources are missing; install them with:\n"
                         f"  apt-get update && apt-get install -y {' '.join(dict.fromkeys(missing))}")


def package_versions(packages: list[str]) -> dict[str, str]:
    """Installed Debian package versions (recorded for reproducibility; empty if no dpkg)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *packages],
                             capture_output=True, text=True).stdout
    except FileNotFoundError:
        return {}
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def is_heldout(source: str, doc_id: str, fraction: float, salt: str) -> bool:
    h = hashlib.sha256(f"{salt}:{source}:{doc_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") < fraction * 2 ** 64


def build_corpus(cfg: CorpusConfig) -> dict:
    """Write the split text files and the manifest; returns the manifest."""
    sources = [SOURCES[n] for n in cfg.sources]
    check_installed(sources)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cfg.manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "salt": cfg.salt, "heldout_fraction": cfg.heldout_fraction, "separator": cfg.separator,
        "files": {s: f"{s}.txt" for s in SPLITS},
        "packages": package_versions([p for s in sources for p in s.packages]),
        "sources": {}, "splits": {}}
    split_docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    for src in sources:
        t0 = time.perf_counter()
        docs = list(src.load())
        ids = [d.doc_id for d in docs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{src.name}: duplicate document ids")
        whole = hashlib.sha256()
        entry: dict = {"licence": src.licence, "kind": src.kind, "packages": list(src.packages),
                       "documents": len(docs), "bytes": 0,
                       "splits": {s: {"documents": 0, "bytes": 0} for s in SPLITS}}
        for i, d in enumerate(docs):
            for bad in (cfg.separator, PAD_TOKEN):
                if bad in d.text:
                    raise ValueError(f"{src.name}/{d.doc_id}: contains the special token {bad!r}")
            b = d.text.encode("utf-8")
            whole.update((cfg.separator.encode() if i else b"") + b)
            split = "heldout" if is_heldout(src.name, d.doc_id, cfg.heldout_fraction, cfg.salt) \
                else "train"
            split_docs[split].append(d.text)
            entry["bytes"] += len(b)
            entry["splits"][split]["documents"] += 1
            entry["splits"][split]["bytes"] += len(b)
        entry["sha256"] = whole.hexdigest()
        manifest["sources"][src.name] = entry
        print(f"{src.name:14s} {len(docs):6d} docs {entry['bytes'] / 1e6:7.2f} MB  "
              f"held-out {entry['splits']['heldout']['documents']:4d} docs  "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
    for split, texts in split_docs.items():
        data = cfg.separator.join(texts).encode("utf-8")
        (cfg.out_dir / f"{split}.txt").write_bytes(data)
        manifest["splits"][split] = {"documents": len(texts), "bytes": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()}
    cfg.manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def split_documents(text: str, manifest: dict, split: str) -> dict[str, list[str]]:
    """Inverse of the file layout: a split file's documents grouped by source (manifest order)."""
    docs = text.split(manifest["separator"])
    out, i = {}, 0
    for name, entry in manifest["sources"].items():
        n = entry["splits"][split]["documents"]
        out[name], i = docs[i:i + n], i + n
    if i != len(docs):
        raise ValueError(f"{split}: {len(docs)} documents but the manifest lists {i}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the text corpus (train/held-out split).")
    ap.add_argument("--out", type=Path, default=CorpusConfig.out_dir)
    ap.add_argument("--manifest", type=Path, default=CorpusConfig.manifest)
    ap.add_argument("--heldout-fraction", type=float, default=CorpusConfig.heldout_fraction)
    args = ap.parse_args(argv)
    m = build_corpus(CorpusConfig(out_dir=args.out, manifest=args.manifest,
                                  heldout_fraction=args.heldout_fraction))
    for split, s in m["splits"].items():
        print(f"{split:8s} {s['documents']:6d} docs {s['bytes'] / 1e6:7.2f} MB -> {args.out / (split + '.txt')}")


if __name__ == "__main__":
    main()
