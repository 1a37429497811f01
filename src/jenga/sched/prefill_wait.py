"""Shared prefixes among live requests: the shared-prefill wait, and the
branch points the memory manager is told of.

Shared-prefill wait: a waiting request whose prompt shares a prefix with
one still prefilling waits for that prefill, then hits its pages.

Admitted in the same step, two requests with a common document or few-shot
prefix both compute it (a hit needs pages committed by an earlier step);
one step apart, the second computes only what differs.  SGLang checks its
batch for the same case.  A request waits only when the other's prefill
would add at least `min_tokens` to its hit, so a short shared system prompt
that is already cached never serialises admission.

Branch points (`SharedPrefixes`): when a request arrives, its prompt is
compared with the latest few live requests (waiting or running) that open
with the same tokens, and both are told where their common prefix ends
(`MemoryManager.share_prefix`).  Whichever passes that point first saves
what a hit there needs (a Mamba state, the sliding windows before it), so
the next request of a new shared prompt hits instead of only the third:
a hit used to need a lookup that saw the prefix cached in the other groups.
"""

from __future__ import annotations

from collections import deque

from .request import Request, Status


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


class SharedPrefixes:
    """Live requests by their first `step` prompt tokens (with the cache
    salt and the images among them), the latest `fan` per key.

    `step` is the manager's `shared_prefix_step()`: common prefixes are
    rounded down to it, and shorter ones are ignored."""

    def __init__(self, step: int, share, fan: int = 8) -> None:
        self.step, self.share, self.fan = step, share, fan
        self.by_key: dict[tuple, deque[Request]] = {}

    def _key(self, req: Request) -> tuple | None:
        if req.prompt_len <= self.step:
            return None
        return (req.cache_salt, tuple(req.prompt_token_ids[:self.step]),
                tuple(img.content_hash for img in req.images if img.position < self.step))

    def arrive(self, req: Request) -> None:
        """`req` was just queued: tell it and every live request of its key
        where their common prefix ends (rounded down to `step`, at most
        all but the last prompt token of either)."""
        key = self._key(req)
        if key is None:
            return
        peers = self.by_key.setdefault(key, deque(maxlen=self.fan))
        for other in peers:
            if other.status is Status.FINISHED:
                continue
            shared = common_prefix(req.prompt_token_ids, other.prompt_token_ids)
            shared = min(shared, req.prompt_len - 1, other.prompt_len - 1) // self.step * self.step
            if shared > 0:
                self.share(req.req_id, shared)
                self.share(other.req_id, shared)
        peers.append(req)

    def leave(self, req: Request) -> None:
        """`req` finished: drop its key once no live request has it."""
        key = self._key(req)
        peers = self.by_key.get(key) if key is not None else None
        if peers is not None and all(p.status is Status.FINISHED for p in peers):
            del self.by_key[key]
