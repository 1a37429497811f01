"""Helpers shared by subcommands: resolve a model name and a KV budget."""

from __future__ import annotations

from pathlib import Path

from ..memory.spec import ModelShape


def resolve_shape(name: str, kv_cache_dtype: str = "auto") -> ModelShape:
    """A preset name, or a path to a config.json or a model folder, with
    its state stored as `kv_cache_dtype` says (memory/kv_dtype.py)."""
    from ..memory.kv_dtype import KVDtypeRule
    from ..memory.shapes.hf import shape_from_path
    from ..memory.shapes.presets import get_preset

    shape = shape_from_path(name) if Path(name).exists() else get_preset(name)
    return KVDtypeRule.parse(kv_cache_dtype).apply(shape)


def split_allocators(text: str) -> list[str]:
    from ..memory.plan import ALLOCATORS

    names = [a.strip() for a in text.split(",") if a.strip()]
    for a in names:
        if a not in ALLOCATORS:
            raise ValueError(f"unknown allocator {a!r}; choose from {', '.join(ALLOCATORS)}")
    if not names:
        raise ValueError("--allocator needs at least one allocator")
    return names
