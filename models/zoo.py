"""Registry of the bundled checkpoints: ``list()``, ``path(name)``, ``load(name) -> (model, tokenizer)``.

Every checkpoint folder under ``models/checkpoints/`` holds a ``save_pretrained`` model (safetensors),
its tokenizer, a model card (README.md) and ``checksums.json`` (sha256 of each file). Loading checks
the checksums first and refuses missing or unexpected weights, so a corrupt or partial checkpoint
raises a clear error instead of yielding a half-loaded model.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
ENTRIES = {
    "text-target": "text-target",
    "text-draft": "text-draft",
}
TEXT_PROMPTS = ROOT / "text" / "prompts_heldout.jsonl"


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public verb
    """Names of the bundled checkpoints that are present."""
    return [name for name, folder in ENTRIES.items() if (CHECKPOINTS / folder / "config.json").is_file()]


def path(name: str) -> pathlib.Path:
    if name not in ENTRIES:
        raise KeyError(f"unknown bundled model {name!r}; known: {', '.join(ENTRIES)}")
    folder = CHECKPOINTS / ENTRIES[name]
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"bundled model {name!r} is not installed at {folder}")
    return folder


def text_prompts_path() -> pathlib.Path:
    if not TEXT_PROMPTS.is_file():
        raise FileNotFoundError(f"held-out prompt file missing: {TEXT_PROMPTS}")
    return TEXT_PROMPTS


def sha256(file: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: pathlib.Path) -> None:
    """Record the sha256 of every file in a checkpoint folder (run after saving it)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in ("checksums.json", "README.md"))
    (folder / "checksums.json").write_text(json.dumps({p.name: sha256(p) for p in files}, indent=1) + "\n")


def verify(folder: pathlib.Path) -> None:
    listing = folder / "checksums.json"
    if not listing.is_file():
        raise ValueError(f"checkpoint {folder} has no checksums.json")
    for name, expected in json.loads(listing.read_text()).items():
        file = folder / name
        if not file.is_file():
            raise ValueError(f"checkpoint {folder.name}: file {name} is missing")
        if sha256(file) != expected:
            raise ValueError(f"checkpoint {folder.name}: file {name} is corrupt (sha256 mismatch)")


def load(name: str, dtype: torch.dtype = torch.float32, device: str | None = None):
    """(model in eval mode, tokenizer) for a bundled checkpoint, after verifying its files."""
    return load_folder(path(name), dtype, device)


def load_folder(folder: pathlib.Path, dtype: torch.dtype = torch.float32, device: str | None = None):
    """(model in eval mode, tokenizer) from a checkpoint folder with checksums.json."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = pathlib.Path(folder)
    name = folder.name
    verify(folder)
    model, info = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=dtype,
                                                       output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"checkpoint {name}: weights do not match the model: {problems}")
    if device is not None:
        model = model.to(device)
    return model.eval(), AutoTokenizer.from_pretrained(folder)
