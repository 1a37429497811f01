"""What one layer's kernel computes and moves for a step, per kind: the
arithmetic behind `Policy.step_work`.

A step computing queries at positions [s, e) of a layer attends each query
to the keys in its scope and reads their K/V; these are closed forms of
those sums (pure integers).  The simulator's cost model multiplies them out;
the policies decide which of them a kind uses, so a kind's scope rule and
its cost cannot disagree.
"""

from __future__ import annotations


def causal_pairs(s: int, e: int) -> int:
    """Sum over queries p in [s, e) of the p+1 keys a causal query sees."""
    return (e * (e + 1) - s * (s + 1)) // 2


def window_pairs(s: int, e: int, w: int) -> int:
    """Sum over p in [s, e) of min(p+1, w)."""
    mid = min(max(s, w), e)   # queries below mid still see fewer than w keys
    return causal_pairs(s, mid) + w * (e - mid)


def chunk_prefix(x: int, c: int) -> int:
    """Sum over p in [0, x) of (p mod c) + 1."""
    r = x % c
    return (x // c) * c * (c + 1) // 2 + r * (r + 1) // 2
