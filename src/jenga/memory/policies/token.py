"""Policies of the per-token attention kinds: full, sliding, chunked.

Table entry i holds tokens [i*P, (i+1)*P).  The kinds differ only in the
first token a future step still needs (`first_needed`): full keeps every
token, sliding(W) the last W-1 before the next token, chunked(C) the tokens
of the current chunk.  Entries wholly before it are released at once, and a
prefix hit of length L is valid when every page from first_needed(L) to L is
cached (for full that is the whole prefix).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..pool import PagePool
from ..reqstate import ActionLog, ReqMem
from .base import NO_PAGE, Alloc, Policy


INF = float("inf")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class FullPolicy(Policy):
    kinds = ("full",)

    def first_needed(self, next_pos: int) -> int:
        return 0

    def _extra(self, r: ReqMem) -> int:
        """Encoder tokens this group also stores (max-page on cross models)."""
        return sum(img.num_tokens for img in r.images) if self.group.holds_encoder_tokens else 0

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        table = r.tables[self.gid]
        if not table and self._extra(r):   # max-page keeps the encoder tokens here: run it once
            log.encoder_runs.update(range(len(r.images)))
        need = _ceil_div(end + r.lookahead + self._extra(r), self.P)
        lo = self.first_needed(start) // self.P
        while len(table) < need:
            if len(table) < lo:
                table.append(NO_PAGE)
                continue
            page = alloc()
            if page is None:
                return False
            table.append(page)
        return True

    def release_at(self, k: int) -> float:
        """Smallest next position at which the first k pages leave scope."""
        return INF

    def grow_threshold(self, r: ReqMem) -> float:
        return len(r.tables[self.gid]) * self.P - self._extra(r) - r.lookahead

    def commit_threshold(self, r: ReqMem) -> float:
        cache_at = INF if self.group.holds_encoder_tokens else (r.cached_upto[self.gid] + 1) * self.P
        return min(cache_at, self.release_at(r.released_upto[self.gid] + 1))

    def out_of_scope(self, r: ReqMem, next_pos: int) -> Iterator[int]:
        # within the prompt, the scope of the last page-aligned position: a
        # prefix hit there (the prompt's end, rounded down) needs up to one
        # page more than the next token does
        pos = next_pos // self.P * self.P if next_pos <= r.prompt_len else next_pos
        hi = min(self.first_needed(pos) // self.P, len(r.tables[self.gid]))
        lo = r.released_upto[self.gid]
        r.released_upto[self.gid] = max(lo, hi)
        # the windows before the prefix this request hit and before a branch
        # point (a prefix other groups still hold) serve whoever hits there
        # next: they stay until the request ends
        keep = [range(self.first_needed(x) // self.P, x // self.P) for x in (r.hit_len, r.branch) if x]
        return (i for i in range(lo, hi) if r.tables[self.gid][i] != NO_PAGE and not any(i in k for k in keep))

    def cacheable(self, r: ReqMem, num_computed: int) -> Iterator[tuple[int, int]]:
        if self.group.holds_encoder_tokens:
            return
        table = r.tables[self.gid]
        for i in range(r.cached_upto[self.gid], min(num_computed // self.P, len(table))):
            key = r.key_at((i + 1) * self.P)
            if key is None:
                return
            r.cached_upto[self.gid] = i + 1
            if table[i] != NO_PAGE:
                yield i, key

    def _cached_run(self, r: ReqMem, upper: int, pool: PagePool) -> list[int]:
        """run[i] = number of consecutive cached pages ending at page i."""
        runs, run = [], 0
        for i in range(upper // self.P):
            key = r.key_at((i + 1) * self.P)
            run = run + 1 if key is not None and pool.lookup(self.gid, key) is not None else 0
            runs.append(run)
        return runs

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        if self.group.holds_encoder_tokens:
            return 0
        runs = self._cached_run(r, upper, pool)
        for k in range(len(runs), 0, -1):
            # the page ending at the hit must be cached, plus those in scope
            need = max(1, k - self.first_needed(k * self.P) // self.P)
            if runs[k - 1] >= need:
                return k * self.P
        return 0

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        table = r.tables[self.gid]
        lo = self.first_needed(length) // self.P
        for i in range(length // self.P):
            if i < lo:
                table.append(NO_PAGE)
                continue
            page = pool.lookup(self.gid, r.key_at((i + 1) * self.P))
            pool.incref(self.gid, page)
            table.append(page)
        r.cached_upto[self.gid] = length // self.P
        r.released_upto[self.gid] = lo

    def prompt_end_pages(self, r: ReqMem) -> range:
        end = r.prompt_len // self.P * self.P
        return range(self.first_needed(end) // self.P, end // self.P)

    def priority(self, r: ReqMem, index: int) -> int:
        return -(index + 1) * self.P

    def needed_units(self, r: ReqMem) -> int:
        return r.alloc_end - self.first_needed(r.num_computed) + self._extra(r)

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        extra = encoder_tokens if self.group.holds_encoder_tokens else 0
        return context - self.first_needed(context) + extra

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        extra = encoder_tokens if self.group.holds_encoder_tokens else 0
        return _ceil_div(context + extra, self.P) - self.first_needed(context) // self.P


    def max_scope(self) -> float:
        """Most earlier tokens a token may still need (full: all of them)."""
        return INF

    def peak_pages(self, context: int, encoder_tokens: int, chunk: int) -> int:
        full = _ceil_div(context + self._extra_tokens(encoder_tokens), self.P)
        if self.max_scope() == INF:
            return full
        # a step keeps every token it computes, plus the scope before them
        step = _ceil_div(int(self.max_scope()) + chunk, self.P) + 1
        return min(full, max(self.footprint_pages(context, encoder_tokens), step))

    def _extra_tokens(self, encoder_tokens: int) -> int:
        return encoder_tokens if self.group.holds_encoder_tokens else 0


class SlidingPolicy(FullPolicy):
    kinds = ("sliding",)
    static_weight = 0.5

    def first_needed(self, next_pos: int) -> int:
        return max(0, next_pos - self.group.spec.window + 1)

    def release_at(self, k: int) -> float:
        return k * self.P + self.group.spec.window - 1

    def max_scope(self) -> float:
        return self.group.spec.window - 1

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return min(context, self.group.spec.window)

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return _ceil_div(context, self.P) - max(0, context - self.group.spec.window) // self.P


class ChunkedPolicy(FullPolicy):
    kinds = ("chunked",)
    static_weight = 0.5

    def first_needed(self, next_pos: int) -> int:
        return next_pos // self.group.spec.chunk * self.group.spec.chunk

    def release_at(self, k: int) -> float:
        c = self.group.spec.chunk
        return _ceil_div(k * self.P, c) * c

    def max_scope(self) -> float:
        return self.group.spec.chunk - 1
