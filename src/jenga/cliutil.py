"""Build argparse options from frozen config dataclasses, so the CLI and the
configs never drift: one `--flag-name` per field, typed from its default,
its help taken from the field's line in the class docstring (the
"name: text" lines), vLLM's name first where the field's `vllm` metadata
gives one and Jenga's kept as an alias.  `parse_bytes` is the one byte-size
syntax of every size flag of every subcommand.  Pure Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtKMGT]?)(i?)([bB]?)\s*$")
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
SIZE_HELP = "bytes: a number, or with a unit: 1G = 1GiB = 2^30, 1GB = 10^9, 1.5G, 512MiB"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr
    ("jenga serve: error: ...; see --help") and exit code 2, without the
    usage block; subparsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class ByteSizeError(argparse.ArgumentTypeError, ValueError):
    """A bad byte size: argparse prints its message; library callers can
    catch it as the ValueError it is."""


def parse_bytes(text: str) -> int:
    """`1073741824`, `1G`, `1GiB`, `1.5GB`, `512MiB`, `2k` -> bytes.  A bare
    unit letter is binary in upper case (1G = 2^30) and decimal in lower
    case (1g = 10^9), as vLLM reads its sizes; `iB` is always binary, `B`
    after a letter always decimal.  Raises ByteSizeError."""
    m = _SIZE.match(text) if isinstance(text, str) else None
    if not m:
        raise ByteSizeError(f"not a byte size: {text!r} (e.g. 1073741824, 1G, 1GiB, 1.5GB, 512MiB)")
    number, letter, binary, b = m.groups()
    if binary and not letter:
        raise ByteSizeError(f"not a byte size: {text!r} (e.g. 1073741824, 1G, 1GiB, 1.5GB, 512MiB)")
    if binary:
        base = 1024
    elif b:
        base = 1000
    else:
        base = 1024 if letter.isupper() else 1000
    value = float(number) * base ** _POWER[letter.lower()]
    if value < 1 or value != int(value) and not letter:
        raise ByteSizeError(f"byte size must be a positive whole number of bytes: {text!r}")
    return int(value)


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its text} from the "name: text" lines of the docstrings
    of `cls` and its bases (continuation lines joined; the class's own
    text wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        current = None
        for line in (klass.__doc__ or "").splitlines():
            m = re.match(r"^    ([a-z_][a-z0-9_]*)(?: / [a-z_]+)*: (.*)$", line)
            if m and m.group(1) in getattr(klass, "__dataclass_fields__", {}):
                current = m.group(1)
                docs[current] = m.group(2).strip()
            elif current and line.startswith("        ") and line.strip():
                docs[current] += " " + line.strip()
            else:
                current = None
    return docs


def flag_names(f: dataclasses.Field) -> list[str]:
    """The field's flags: vLLM's name first when it differs, then Jenga's."""
    names = [f.metadata["vllm"]] if "vllm" in f.metadata else []
    return ["--" + n.replace("_", "-") for n in names + [f.name]]


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                       help_prefix: str = "") -> None:
    """Add one option per field of dataclass `cls` (bools get --x/--no-x);
    every option's default is None, meaning "the field's default"."""
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = f.metadata.get("cli_default", default)
        text = docs.get(f.name, "").rstrip(".")
        help_ = f"{help_prefix}{text} (default: {shown})" if text else f"{help_prefix}default {shown}"
        flags = flag_names(f)
        cli_type = f.metadata.get("cli_type")
        if cli_type == "bytes":
            parser.add_argument(*flags, dest=f.name, default=None, type=parse_bytes, metavar="BYTES",
                                help=f"{help_}; {SIZE_HELP}".replace("%", "%%"))
        elif cli_type is not None:   # an optional field: None (the default) means auto
            parser.add_argument(*flags, dest=f.name, default=None, type=cli_type, help=help_.replace("%", "%%"))
        elif isinstance(default, bool):
            parser.add_argument(*flags, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                help=help_.replace("%", "%%"))
        elif isinstance(default, (int, float, str)):
            parser.add_argument(*flags, dest=f.name, default=None, type=type(default), help=help_.replace("%", "%%"))


def from_args(cls: type, args: argparse.Namespace, **overrides: Any):
    """Instantiate `cls` from the options the user gave (others keep their
    defaults); `overrides` win.  Validation errors come from __post_init__."""
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if getattr(args, f.name, None) is not None}
    kwargs.update(overrides)
    return cls(**kwargs)
