"""Command-line flags for a decoding method, generated from the core's method configs
(:mod:`multispec.methods`): ``--drafter``, ``--acceptance`` and one flag per config field, left
unset unless given, so a command line's defaults are the Python API's. Knows no modality; each
modality's CLI passes the configs its adapter supports."""
from __future__ import annotations

import argparse
import dataclasses
import typing

from multispec.methods import Method, method_from_names


def _per_level(kind):
    def parse(text: str):
        values = tuple(kind(v) for v in text.split("/"))
        return values[0] if len(values) == 1 else values
    parse.__name__ = f"{kind.__name__} or {kind.__name__}s separated by / (one per codebook level)"
    return parse


def _flag_type(hint):
    """argparse type for a config field's type hint (int, float, bool, optional, per-level tuple)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in (int, float, str):
        return hint
    if any(typing.get_origin(a) is tuple for a in args):  # int | tuple[int, ...]: "4" or "4/16"
        return _per_level(next(a for a in args if a in (int, float)))
    if len(args) == 1 and args[0] in (int, float):  # int | None
        return args[0]
    raise TypeError(f"no command-line type for {hint}")


def add_method_arguments(parser: argparse.ArgumentParser, drafters: tuple, acceptances: tuple,
                         default_drafter: str = "draft", default_acceptance: str = "exact") -> None:
    """``--drafter`` (plain or one of ``drafters``), ``--acceptance`` and the configs' fields."""
    group = parser.add_argument_group("method (multispec.methods; unset flags keep the config defaults)")
    group.add_argument("--drafter", choices=["plain", *(c.name for c in drafters)], default=default_drafter)
    group.add_argument("--acceptance", choices=[c.name for c in acceptances],
                       help=f"default: {default_acceptance} (exact with --drafter plain)")
    seen = {}
    for config in (*drafters, *acceptances):
        hints = typing.get_type_hints(config)
        for field in dataclasses.fields(config):
            seen.setdefault(field.name, []).append((config, hints[field.name], field.default))
    for name, owners in seen.items():
        config, hint, default = owners[0]
        users = ", ".join(f"{c.name} {d!r}" for c, _, d in owners)
        flag = "--" + name.replace("_", "-")
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"default: {users}")
        else:
            group.add_argument(flag, type=_flag_type(hint), default=None, help=f"default: {users}")
    parser.set_defaults(method_fields=tuple(seen), default_acceptance=default_acceptance)


def method_from_args(args: argparse.Namespace) -> Method:
    """The :class:`Method` the flags of :func:`add_method_arguments` describe (ValueError if a given
    flag does not apply to the chosen drafter and rule)."""
    settings = {name: getattr(args, name) for name in args.method_fields}
    acceptance = args.acceptance or ("exact" if args.drafter == "plain" else args.default_acceptance)
    return method_from_names(args.drafter, acceptance, **settings)
