"""Policy of recurrent-state (Mamba / SSM) layers.

A request holds one page: its running state.  Prefix caching keeps
*checkpoints*: copies of the state after exactly c tokens, saved into fresh
pages during the step that passes c and cached under the prefix key of c.
A hit of length c copies the checkpoint into a new running page.

Where checkpoints go (rules.mamba_checkpoints):
- "jenga": every `interval` tokens, at the end of each prompt and at a
  branch point (the length other groups already hit, Marconi-style), all
  rounded down to the hit alignment, so a shared prompt of any length hits;
  the interval defaults to one checkpoint per the tokens whose attention
  K/V costs as much as a state (memory/checkpoint_interval.py);
- "block": only at multiples of the attention block (vLLM v1), so prompts
  shorter than a block never hit;
- "none": never (vLLM v0).
"""

from __future__ import annotations

import math

from ..pool import PagePool
from ..reqstate import ActionLog, ReqMem
from .base import Alloc, Policy


class MambaPolicy(Policy):
    kinds = ("mamba",)
    static_weight = 0.5
    recurrent = True

    @staticmethod
    def step_work(spec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        return 0, spec.state_bytes, spec.state_bytes
    align = 16   # set by the manager: lcm of the token groups' page_tokens

    def hit_step(self) -> int | None:
        # regular checkpoints only: prompt ends and branch points are not
        # known before the requests that create them
        mode = self.rules.mamba_checkpoints
        return None if mode == "none" else self.align if mode == "block" else math.lcm(self.align, self.mamba_interval)

    def branch_step(self) -> int | None:
        # "jenga" saves a state at every branch point a request is told of
        return self.align if self.rules.mamba_checkpoints == "jenga" else self.hit_step()

    def checkpoints(self, r: ReqMem, start: int, end: int) -> list[int]:
        mode, a = self.rules.mamba_checkpoints, self.align
        if mode == "none":
            return []
        first = (start // a + 1) * a
        if first > end:
            return []
        if mode == "block":
            return list(range(first, end + 1, a))
        marks = {r.prompt_len // a * a, r.branch, *r.shared}
        return [c for c in range(first, end + 1, a) if c % self.mamba_interval == 0 or c in marks]

    def grow_threshold(self, r: ReqMem) -> float:
        if not r.tables[self.gid]:
            return -1
        if self.rules.mamba_checkpoints == "none":
            return float("inf")
        a = self.align
        nxt = (r.alloc_end // a + 1) * a   # next checkpoint candidate
        if self.rules.mamba_checkpoints == "jenga":
            marks = [c for c in (r.prompt_len // a * a, r.branch, *r.shared) if c > r.alloc_end]
            nxt = min([(r.alloc_end // self.mamba_interval + 1) * self.mamba_interval] + marks)
        return nxt - 1

    def commit_threshold(self, r: ReqMem) -> float:
        return float("inf")   # checkpoints are published from r.pending

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        table = r.tables[self.gid]
        if not table:
            page = alloc()
            if page is None:
                return False
            table.append(page)
            src = r.hit_src.pop(self.gid, None)
            if src is None:
                log.zeros.append((self.gid, page))
            else:
                log.copies.append((self.gid, src, page))
        if r.num_draft:
            return self._draft_states(r, end - r.num_draft, end, alloc, log)
        for c in self.checkpoints(r, start, end):
            key = r.key_at(c)
            if key is None or pool.lookup(self.gid, key) is not None:
                continue
            page = alloc()
            if page is None:   # optional: the manager retries it after the step's other pages
                log.optional.append((self.gid, lambda page, c=c, key=key: self._save(r, c, key, page, log)))
            else:
                self._save(r, c, key, page, log)
        return True

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        # the running state, the draft states; checkpoints are optional
        running = 0 if r.tables[self.gid] else 1
        if r.num_draft:
            return running + r.num_draft, 0
        return running, len(self.checkpoints(r, start, end))

    def _save(self, r: ReqMem, c: int, key, page: int, log: ActionLog) -> None:
        r.pending[self.gid].append((page, key, -c))
        log.saves.append((self.gid, c, page))

    def _draft_states(self, r: ReqMem, first: int, end: int, alloc: Alloc, log: ActionLog) -> bool:
        """Keep the state after each verified-length candidate first..end-1
        (the running page ends at `end`); no cache checkpoints in drafts."""
        scratch = r.scratch.setdefault(self.gid, {})
        for pos in range(first, end):
            page = alloc()
            if page is None:
                return False
            scratch[pos] = page
            log.saves.append((self.gid, pos, page))
        return True

    def settle(self, r: ReqMem, num_computed: int, release) -> None:
        scratch = r.scratch.pop(self.gid, None)
        if not scratch:
            return
        if num_computed in scratch:   # a draft was rejected: adopt its state
            release(r.tables[self.gid][0])
            r.tables[self.gid][0] = scratch.pop(num_computed)
        for page in scratch.values():
            release(page)

    def snapshot(self, r: ReqMem) -> tuple:
        return super().snapshot(r) + (dict(r.scratch.get(self.gid, {})),)

    def restore(self, r: ReqMem, snap: tuple, release) -> None:
        *base, scratch = snap
        for pos, page in r.scratch.get(self.gid, {}).items():
            if pos not in scratch:
                release(-1, page)
        if scratch:
            r.scratch[self.gid] = scratch
        else:
            r.scratch.pop(self.gid, None)
        super().restore(r, tuple(base), release)

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        if self.rules.mamba_checkpoints == "none":
            return 0
        cached = pool.cached_mask(self.gid, r.hasher.page_keys(r.tokens, upper, self.align))
        for i in range(len(cached) - 1, -1, -1):   # the latest checkpoint cached
            if cached[i]:
                return (i + 1) * self.align
        return 0

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        if length == 0:
            return
        page = pool.lookup(self.gid, r.key_at(length))
        pool.incref(self.gid, page)
        r.pending[self.gid].append((page, None, -length))
        r.hit_src[self.gid] = page

    def hit_pages_cached(self, r: ReqMem, length: int, pool: PagePool) -> int:
        return 1 if length and not pool.ref[self.gid][pool.lookup(self.gid, r.key_at(length))] else 0

    def priority(self, r: ReqMem, index: int) -> int:
        return -r.num_computed

    def release_touches(self, r: ReqMem) -> list[int]:
        # the checkpoints a hit is likeliest to start from: the prompt's
        # end, a branch point, and the latest regular one (the request's own
        # restart after a preemption); stamped when the request lets go, so
        # they outlive the older checkpoints other requests left behind
        if self.rules.mamba_checkpoints != "jenga":
            return []
        a, done = self.align, r.num_computed
        step = math.lcm(a, self.mamba_interval)
        marks = {done // step * step, r.prompt_len // a * a, r.branch, *r.shared}
        return sorted(c for c in marks if 0 < c <= done)

    def needed_units(self, r: ReqMem) -> int:
        return 1 if r.tables[self.gid] else 0

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return 1

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return 1
