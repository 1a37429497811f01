"""KV-cache dtypes per group: `--kv-cache-dtype auto|fp8|fp8_e4m3|fp8_e5m2`,
or per kind, `full=fp8,sliding=auto`.

A rule maps a layer kind to the dtype its state is stored in; `auto` keeps
the model's.  A bare dtype applies to every layer that stores K/V (the
attention kinds: the layers whose spec has KV heads); Mamba states and
vision embeddings keep their own dtype unless a `kind=dtype` entry names
them.  `fp8` means `fp8_e4m3` (vLLM's default fp8 format).  Since the
planner sizes every group's pages from its own spec, per-group dtypes
cost nothing in waste: the pool mixes them page for page.  Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .spec import KINDS, ModelShape

KV_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "bfloat16", "float16", "float32")
_ALIASES = {"fp8": "fp8_e4m3"}


@dataclass(frozen=True)
class KVDtypeRule:
    """`default`: the dtype of K/V layers without an entry ("auto": the
    model's); `per_kind`: (kind, dtype) overrides."""

    default: str = "auto"
    per_kind: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def parse(text: str) -> KVDtypeRule:
        """From the flag's text; ValueError naming the bad part."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"kv_cache_dtype must be one of {KV_DTYPES} or kind=dtype pairs, got {text!r}")
        default, per_kind = "auto", []
        for part in text.split(","):
            part = part.strip()
            kind, _, dtype = part.rpartition("=")
            if dtype not in KV_DTYPES:
                raise ValueError(f"kv_cache_dtype: unknown dtype {dtype!r} in {text!r}; known: {', '.join(KV_DTYPES)}")
            if not kind:
                default = dtype
            elif kind not in KINDS:
                raise ValueError(f"kv_cache_dtype: unknown layer kind {kind!r} in {text!r}; known: {', '.join(KINDS)}")
            else:
                per_kind.append((kind, dtype))
        return KVDtypeRule(default, tuple(per_kind))

    @property
    def is_auto(self) -> bool:
        return self.default == "auto" and all(d == "auto" for _, d in self.per_kind)

    def dtype_for(self, kind: str, stores_kv: bool) -> str | None:
        """The storage dtype for a layer of `kind`, or None to keep its own."""
        chosen = dict(self.per_kind).get(kind, self.default if stores_kv else "auto")
        return None if chosen == "auto" else _ALIASES.get(chosen, chosen)

    def apply(self, shape: ModelShape) -> ModelShape:
        """`shape` with every layer's storage dtype chosen by the rule (an
        SSM state given its own `state_dtype` keeps it unless named)."""
        if self.is_auto:
            return shape
        layers = []
        for spec in shape.layers:
            dtype = self.dtype_for(spec.kind, spec.num_kv_heads > 0)
            if dtype is None:
                layers.append(spec)
            elif spec.state_dtype:   # mamba named explicitly: both states in the asked dtype
                layers.append(replace(spec, dtype=dtype, state_dtype=dtype))
            else:
                layers.append(replace(spec, dtype=dtype))
        return replace(shape, layers=tuple(layers))
