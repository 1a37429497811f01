"""Build argparse options from frozen config dataclasses, so the CLI and the
configs never drift: one `--flag-name` per field, typed from its default."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                       help_prefix: str = "") -> None:
    """Add one option per field of dataclass `cls` (bools get --x/--no-x)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if "cli_type" in f.metadata:   # an optional field: None (the default) means auto
            parser.add_argument(flag, dest=f.name, default=None, type=f.metadata["cli_type"],
                                help=f"{help_prefix}default {f.metadata.get('cli_default', default)}")
        elif isinstance(default, bool):
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                                help=f"{help_prefix}default {default}")
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, dest=f.name, default=None, type=type(default),
                                help=f"{help_prefix}default {default}")


def from_args(cls: type, args: argparse.Namespace, **overrides: Any):
    """Instantiate `cls` from the options the user gave (others keep their
    defaults); `overrides` win.  Validation errors come from __post_init__."""
    kwargs = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if getattr(args, f.name, None) is not None}
    kwargs.update(overrides)
    return cls(**kwargs)
