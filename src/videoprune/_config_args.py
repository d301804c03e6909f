"""Config dataclass <-> argparse flags: the helpers every command line that is built from a config uses.

One floor below :mod:`videoprune.cli`, so that ``cli`` and the modules it drives (``bench``,
the lmms-eval task exporter) all import these from here, and no import runs back up to ``cli``.
Plain standard library: building a parser imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

__all__ = ["add_config_args", "config_from_args", "states_default"]


def states_default(help_text: str) -> bool:
    """The help already says its default ("... (default 0.75)", "default: the model's")."""
    return "(default" in help_text or "default:" in help_text


def _base_type(cls, f: dataclasses.Field):
    """The field's type with ``None`` taken out of an optional (``float | None`` -> ``float``)."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    return hint


def _help_with_default(f: dataclasses.Field, kind) -> str:
    """The field's help with ``(default: X)`` appended unless it says its default already (or is a switch)."""
    text = f.metadata.get("help") or ""
    if kind is bool or states_default(text) or f.default is dataclasses.MISSING:
        return text
    shown = "none" if f.default is None else f.default
    return f"{text} (default: {shown})".strip()


def add_config_args(parser: argparse.ArgumentParser, cls, prefix: str = "") -> None:
    """Add one flag per field of dataclass ``cls`` (help from ``field.metadata["help"]``).

    The flag is ``metadata["flag"]`` or ``--<prefix><name with dashes>``; bools become switches;
    ``metadata["choices"]`` are listed in the usage; the parsed value lands in
    ``args.<prefix><name>``; unset flags parse to None so the dataclass keeps its default, which
    the help text states. A ``str`` field whose default is ``""`` is a required flag (argparse
    then names every missing one in one error).
    """
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag", "--" + (prefix + f.name).replace("_", "-"))
        kind = _base_type(cls, f)
        kwargs = {"dest": prefix + f.name, "default": None, "help": _help_with_default(f, kind)}
        if kind is bool:
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        if kind is str and f.default == "":
            kwargs["required"] = True
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["metavar"] = f.name.upper()
        parser.add_argument(flag, type=kind, **kwargs)


def config_from_args(cls, args: argparse.Namespace, prefix: str = ""):
    """Build ``cls`` from the flags :func:`add_config_args` added; unset flags keep the defaults."""
    given = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in given.items() if v is not None and v is not False})
