"""``multispec.json``, the vocabulary card of an image or speech token model, as a typed dataclass
with a schema check: every known key has a declared type, a missing or mistyped key raises a
ValueError naming the file, the key and what was expected, and the keys a recipe adds to record
how the model was made (data sizes, target samples, ...) are kept in ``records``.

The adapters subclass :class:`TokenModelMeta` with their modality's fields (image: grid and
classes; speech: layout and codec); this module knows nothing about them.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import types
import typing
from dataclasses import dataclass, field

META_FILE = "multispec.json"


@dataclass(frozen=True, kw_only=True)
class TokenModelMeta:
    """The fields every token model's card has; subclasses add their modality's."""

    vocab_size: int
    codebook_size: int
    modality: str = ""
    bos: int | None = None
    eos: int | None = None
    pad: int | None = None
    unconditional_prefix: tuple[int, ...] = ()  # replaces the condition in classifier-free guidance
    condition_dropout: float = 0.0
    seq_len: int | None = None
    records: dict = field(default_factory=dict)  # how it was made: anything else the recipe wrote

    @classmethod
    def from_dict(cls, data: dict, source: str = META_FILE):
        """Check ``data`` against the fields' types (lists become tuples) and build the card."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "records"}
        missing = [name for name, f in known.items() if name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)} (a {cls.__name__} needs them)")
        values = {name: _checked(data[name], hints[name], f"{source}: {name}") for name in known if name in data}
        return cls(**values, records={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, folder):
        path = pathlib.Path(folder) / META_FILE
        if not path.is_file():
            raise ValueError(f"{folder} has no {META_FILE}: not a multispec image or speech model folder")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        """The JSON object (``records`` flattened back in beside the typed keys; unset optional keys,
        None by default, are left out)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name != "records" and not (f.default is None and getattr(self, f.name) is None)}
        return {**out, **self.records}

    def write(self, folder) -> None:
        (pathlib.Path(folder) / META_FILE).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _plain(value):
    return list(map(_plain, value)) if isinstance(value, tuple) else value


def _checked(value, hint, where: str):
    """``value`` if it has type ``hint`` (JSON lists for tuples, ints for floats), else ValueError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _checked(value, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(value) != len(items):
            raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}")
        try:
            return tuple(_checked(v, a, where) for v, a in zip(value, items))
        except ValueError:
            raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}") from None
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool, dict) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where} must be {_describe(hint)}, got {value!r}")


_NOUNS = {int: "integers", float: "numbers", str: "strings"}


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_NOUNS.get(args[0], str(args[0]))}"
        return f"a list of {len(args)} {_NOUNS.get(args[0], str(args[0]))}"
    if args:
        return " or ".join(_describe(a) for a in args)
    return "null" if hint is type(None) else {int: "an integer", float: "a number", str: "a string",
                                              bool: "true or false", dict: "an object"}.get(hint, str(hint))
