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
from ..spec import LayerSpec
from .base import NO_PAGE, Alloc, Policy
from .work import causal_pairs, chunk_prefix, window_pairs


INF = float("inf")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class FullPolicy(Policy):
    kinds = ("full",)
    token_paged = True

    @staticmethod
    def step_work(spec: LayerSpec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        b = spec.bytes_per_token
        return causal_pairs(start, end), end * b, (end - start) * b

    def first_needed(self, next_pos: int) -> int:
        return self.first_key(self.group.spec, next_pos)

    def scope_start(self, next_pos: int) -> int | None:
        return self.first_needed(next_pos)

    def _extra(self, r: ReqMem) -> int:
        """Encoder tokens this group also stores (max-page on cross models)."""
        return sum(img.num_tokens for img in r.images) if self.group.holds_encoder_tokens else 0

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        table = r.tables[self.gid]
        extra = self._extra(r) if self.group.holds_encoder_tokens else 0
        if not table and extra:   # max-page keeps the encoder tokens here: run it once
            log.encoder_runs.update(range(len(r.images)))
        need = -(-(end + r.lookahead + extra) // self.P)
        if len(table) >= need:
            return True
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

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        # as `grow` counts: entries below first_needed(start) get no page;
        # after a hit the table holds one entry per hit page
        extra = self._extra(r) if self.group.holds_encoder_tokens else 0
        need = -(-(end + r.lookahead + extra) // self.P)
        have = hit_tokens // self.P if hit_tokens else len(r.tables[self.gid])
        return max(0, need - max(have, self.first_needed(start) // self.P)), 0

    def release_at(self, k: int) -> float:
        """Smallest next position at which the first k pages leave scope."""
        return INF

    def grow_threshold(self, r: ReqMem) -> float:
        # the position the next page starts at
        extra = self._extra(r) if self.group.holds_encoder_tokens else 0
        return len(r.tables[self.gid]) * self.P - extra - r.lookahead

    def commit_threshold(self, r: ReqMem) -> float:
        # the next page to publish, or the next to leave scope
        g = self.gid
        release_at = self.release_at(r.released_upto[g] + 1)
        if self.group.holds_encoder_tokens:
            return release_at
        cache_at = (r.cached_upto[g] + 1) * self.P
        return release_at if release_at < cache_at else cache_at

    def out_of_scope(self, r: ReqMem, next_pos: int) -> Iterator[int]:
        # within the prompt, the scope of the last page-aligned position: a
        # prefix hit there (the prompt's end, rounded down) needs up to one
        # page more than the next token does
        pos = next_pos // self.P * self.P if next_pos <= r.prompt_len else next_pos
        hi = min(self.first_needed(pos) // self.P, len(r.tables[self.gid]))
        lo = r.released_upto[self.gid]
        if hi <= lo:
            return iter(())   # nothing new left scope: most commits
        r.released_upto[self.gid] = hi
        # the windows before the prefix this request hit and before a branch
        # point (a prefix other groups still hold, or one another live
        # request shares) serve whoever hits there next: they stay until the
        # request ends
        keep = [range(self.first_needed(x) // self.P, x // self.P) for x in (r.hit_len, r.branch, *r.shared) if x]
        table = r.tables[self.gid]
        return (i for i in range(lo, hi) if table[i] != NO_PAGE and not any(i in k for k in keep))

    def cacheable(self, r: ReqMem, num_computed: int) -> list[tuple[int, int]]:
        g, P = self.gid, self.P
        table, lo = r.tables[g], r.cached_upto[g]
        hi = num_computed // P
        if hi > len(table):
            hi = len(table)
        if hi <= lo or self.group.holds_encoder_tokens:
            return []
        # page keys were hashed once, as their tokens arrived; a page whose
        # tokens are not all known yet has no key and stops publication
        keys = r.hasher.page_keys(r.tokens, hi * P, P, lo)
        hi = lo + len(keys)
        r.cached_upto[g] = hi
        return [(i, keys[i - lo]) for i in range(lo, hi) if table[i] != NO_PAGE]

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        if self.group.holds_encoder_tokens:
            return 0
        cached = pool.cached_mask(self.gid, r.hasher.page_keys(r.tokens, upper, self.P))
        if self.max_scope() == INF:   # every earlier page is in scope
            return (cached.index(False) if False in cached else len(cached)) * self.P
        runs, run = [], 0   # runs[i]: consecutive cached pages ending at page i
        for c in cached:
            run = run + 1 if c else 0
            runs.append(run)
        for k in range(len(runs), 0, -1):
            # the page ending at the hit must be cached, plus those in scope
            if runs[k - 1] and runs[k - 1] >= max(1, k - self.first_needed(k * self.P) // self.P):
                return k * self.P
        return 0

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        table = r.tables[self.gid]
        lo = self.first_needed(length) // self.P
        table += [NO_PAGE] * min(lo, length // self.P)
        for key in r.hasher.page_keys(r.tokens, length, self.P)[lo:]:
            page = pool.lookup(self.gid, key)
            pool.incref(self.gid, page)
            table.append(page)
        r.cached_upto[self.gid] = length // self.P
        r.released_upto[self.gid] = lo

    def hit_pages_cached(self, r: ReqMem, length: int, pool: PagePool) -> int:
        lo, refs, index = self.first_needed(length) // self.P, pool.ref[self.gid], pool.cache_map[self.gid]
        return sum(1 for key in r.hasher.page_keys(r.tokens, length, self.P)[lo:] if not refs[index[key]])

    def release_touches(self, r: ReqMem) -> list[int]:
        # the pages a hit at the page-aligned prompt end reads, where they
        # left scope (pages still held are released with a fresh stamp)
        end, table, P = r.prompt_len // self.P * self.P, r.tables[self.gid], self.P
        return [(i + 1) * P for i in range(self.first_needed(end) // P, min(end // P, len(table)))
                if table[i] == NO_PAGE]

    def priority(self, r: ReqMem, index: int) -> int:
        return -(index + 1) * self.P

    def needed_units(self, r: ReqMem) -> int:
        return r.alloc_end - self.first_needed(r.num_computed) + self._extra(r)

    def total_needed_units(self, reqs: list[ReqMem]) -> int:
        if self.group.holds_encoder_tokens:
            return super().total_needed_units(reqs)
        if self.max_scope() == INF:   # every token is needed: no per-request call
            return sum(r.alloc_end for r in reqs)
        first = self.first_needed
        return sum(r.alloc_end - first(r.num_computed) for r in reqs)

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

    @staticmethod
    def first_key(spec: LayerSpec, pos: int) -> int:
        return max(0, pos - spec.window + 1)

    @staticmethod
    def serves(spec: LayerSpec, window: int, chunk: int) -> bool:
        return 0 < window <= spec.window

    @staticmethod
    def step_work(spec: LayerSpec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        w, b = spec.window, spec.bytes_per_token
        return window_pairs(start, end, w), (end - max(0, start - w + 1)) * b, (end - start) * b
    static_weight = 0.5

    def release_at(self, k: int) -> float:
        return k * self.P + self.group.spec.window - 1

    def max_scope(self) -> float:
        return self.group.spec.window - 1

    def scope_priority(self, r: ReqMem, index: int) -> int:
        # a page that slid out of the window serves hits ending within a
        # window after it, so the oldest serves the shortest hits: it goes
        # first.  Evicting the newest first (as the tail of a finished
        # request's pages) broke the window of every longer hit, a shared
        # prefix's end included, while the full-attention group still held it
        return (index + 1) * self.P

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return min(context, self.group.spec.window)

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return _ceil_div(context, self.P) - max(0, context - self.group.spec.window) // self.P


class ChunkedPolicy(FullPolicy):
    kinds = ("chunked",)

    @staticmethod
    def first_key(spec: LayerSpec, pos: int) -> int:
        return pos // spec.chunk * spec.chunk

    @staticmethod
    def serves(spec: LayerSpec, window: int, chunk: int) -> bool:
        return chunk == spec.chunk

    @staticmethod
    def step_work(spec: LayerSpec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        c, b = spec.chunk, spec.bytes_per_token
        return chunk_prefix(end, c) - chunk_prefix(start, c), (end - start // c * c) * b, (end - start) * b
    static_weight = 0.5

    def release_at(self, k: int) -> float:
        c = self.group.spec.chunk
        return _ceil_div(k * self.P, c) * c

    def max_scope(self) -> float:
        return self.group.spec.chunk - 1
