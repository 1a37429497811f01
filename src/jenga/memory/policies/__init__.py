"""Policies, one class per layer kind; the registry maps kind -> class.
A new kind is one class and one line here."""

from __future__ import annotations

from .base import NO_PAGE, Policy
from .budget import BudgetPolicy
from .encoder import CrossPolicy, VisionPolicy
from .mamba import MambaPolicy
from .token import ChunkedPolicy, FullPolicy, SlidingPolicy

REGISTRY: dict[str, type[Policy]] = {
    cls.kinds[0]: cls
    for cls in (FullPolicy, SlidingPolicy, ChunkedPolicy, BudgetPolicy, MambaPolicy, CrossPolicy, VisionPolicy)
}


def policy_for(kind: str) -> type[Policy]:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"no policy for layer kind {kind!r}; known: {', '.join(REGISTRY)}") from None


def first_key(spec, pos: int) -> int:
    """First key position a query at `pos` of a layer of `spec` attends to."""
    return policy_for(spec.kind).first_key(spec, pos)


def serves(spec, window: int, chunk: int) -> bool:
    """Whether a group of `spec` keeps every key a layer with (window, chunk) reads."""
    return policy_for(spec.kind).serves(spec, window, chunk)


__all__ = ["NO_PAGE", "Policy", "REGISTRY", "first_key", "policy_for", "serves"]
