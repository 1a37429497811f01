"""Shared-prefill wait: a waiting request whose prompt shares a prefix with
one still prefilling waits for that prefill, then hits its pages.

Admitted in the same step, two requests with a common document or few-shot
prefix both compute it (a hit needs pages committed by an earlier step);
one step apart, the second computes only what differs.  SGLang checks its
batch for the same case.  A request waits only when the other's prefill
would add at least `min_tokens` to its hit, so a short shared system prompt
that is already cached never serialises admission.
"""

from __future__ import annotations

from .request import Request


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (binary search
    over slice comparisons, which run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class InflightPrefills:
    """Requests whose prompt is not fully computed, by their opening tokens.

    Built afresh each step from the running requests; `add` records one
    admitted this step.  `min_tokens` = 0, or `hit_step` None (the memory
    manager can serve no hit), turns the wait off."""

    def __init__(self, min_tokens: int, running: list[Request], hit_step: int | None = 1) -> None:
        self.n = min_tokens if hit_step else 0
        self.step = hit_step or 1
        self.by_key: dict[tuple, list[Request]] = {}
        for req in running:
            if req.num_computed < req.prompt_len:
                self.add(req)

    def _key(self, req: Request) -> tuple | None:
        if not self.n or req.prompt_len <= self.n:
            return None
        return (req.cache_salt, tuple(req.prompt_token_ids[:self.n]),
                tuple(img.content_hash for img in req.images if img.position < self.n))

    def add(self, req: Request) -> None:
        """`req` is prefilling (its num_computed is where it starts)."""
        key = self._key(req)
        if key is not None:
            self.by_key.setdefault(key, []).append(req)

    def should_wait(self, req: Request, hit_tokens: int) -> bool:
        """True when a prefilling request shares at least `min_tokens` more
        of `req`'s prompt than `req` already hits (counting only what a hit
        can end on: multiples of `hit_step`), and has not computed it."""
        others = self.by_key.get(self._key(req), ()) if self.n else ()
        for other in others:
            if other is req:
                continue
            shared = common_prefix(req.prompt_token_ids, other.prompt_token_ids)
            if shared // self.step * self.step >= hit_tokens + self.n and other.num_computed < shared:
                return True
        return False
