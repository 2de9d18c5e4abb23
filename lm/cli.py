"""Command lines built from config dataclasses, so each default and its help are written once.

A config field states its default and what it means on one line, the help text being the comment:

    @dataclass
    class GRPOConfig:
        group_size: int = option(8, "G: completions per prompt, >= 2 (the book: 16 / 12)")
        top_p: float = option(1.0, "rollout nucleus sampling (1.0: off, as the book)")

`add_dataclass_flags(parser, GRPOConfig)` makes `--group-size` and `--top-p` from those fields (the
type from the annotation, the default and the help from the field) and `dataclass_from_args(GRPOConfig,
args)` reads the parsed flags back into a GRPOConfig. TRL's GRPOConfig and transformers'
HfArgumentParser work the same way (fields with `metadata={"help": ...}`); this is the part we need.

Annotations handled (what our configs use): `int`, `float`, `str`, `bool` (`--x` / `--no-x`), and
`X | None` (the text `none` gives None); `choices` limit a field to a few values. A bad value exits
with status 2 and argparse's message naming the flag, as every other flag does.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Iterable

_BASES = (int, float, str)


def option(default: Any, help: str, choices: Iterable | None = None) -> Any:
    """A dataclass field with its default, its help and (optionally) the values it may take.

    Defaults must be immutable (numbers, strings, None, tuples), as dataclass field defaults are."""
    meta = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=meta)


def _flag_type(cls: type, f: dataclasses.Field, hint: Any) -> tuple[type, bool]:
    """(the base type of field `f`, whether it may be None) from its annotation; anything else is a
    TypeError naming the field (a config the command line cannot express)."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else hint
    if hint is bool and not optional:
        return bool, False
    if hint not in _BASES:
        raise TypeError(f"{cls.__name__}.{f.name}: a flag cannot be made for the type {hint!r} "
                        f"(int, float, str, bool or one of them | None)")
    return hint, optional


def _or_none(base: type):
    """`base`, or None for the text "none" (argparse names the converter in its error message)."""
    def convert(text: str):
        return None if text.strip().lower() == "none" else base(text)
    convert.__name__ = f"{base.__name__} (or none)"
    return convert


def _shown(default: Any) -> str:
    return "none" if default is None else str(default)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                        skip: Iterable[str] = ()) -> None:
    """A `--prefix-name` flag for each field of dataclass `cls` (but `skip`), stored as `prefix_name`.

    The help is the field's `metadata["help"]` plus its default; a field without help is a
    TypeError (every flag has help). A field without a default becomes a required flag."""
    hints, skip = typing.get_type_hints(cls), set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if not f.metadata.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no help: declare it with lm.cli.option(default, help)")
        base, optional = _flag_type(cls, f, hints[f.name])
        flag, dest = "--" + (prefix + f.name).replace("_", "-"), prefix + f.name
        has_default = f.default is not dataclasses.MISSING
        default = f.default if has_default else None
        text = f.metadata["help"] + (f" (default: {_shown(default)})" if has_default else "")
        if base is bool:
            action = parser.add_argument(flag, dest=dest, default=default, required=not has_default,
                                         action=argparse.BooleanOptionalAction)
        else:
            action = parser.add_argument(flag, dest=dest, default=default, required=not has_default,
                                         type=_or_none(base) if optional else base,
                                         choices=f.metadata.get("choices"),
                                         metavar=None if f.metadata.get("choices") else
                                         base.__name__.upper() + ("|none" if optional else ""))
        action.help = text.replace("%", "%%")   # set after: BooleanOptionalAction would append its own default


def dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any):
    """An instance of dataclass `cls` from the flags `add_dataclass_flags` made; fields without a
    flag (skipped) keep their default unless given in `overrides`."""
    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
              if hasattr(args, prefix + f.name)}
    return cls(**{**values, **overrides})
