"""Policy of per-layer token-budget layers (PyramidKV-style KV compression).

A `budget` layer keeps at most B tokens: once full, each new token's K/V
overwrites the slot of the token the compression evicts (the least
attended one), so a request holds exactly ceil(min(n, B) / P) pages and,
unlike a sliding window, no page straddling the first kept token.  Table
entries are slots, not positions.  A prefill chunk of n tokens is written
before it is compressed, so the step needs min(start, B) + n slots: the
pages beyond what the layer keeps are held for that step only (`pending`).

Kept tokens depend on attention scores and their slots are overwritten in
place, so a page never holds content that a prefix key could name: the group
serves no prefix hit (and with it, the model serves none).
"""

from __future__ import annotations

from ..pool import PagePool
from ..reqstate import ActionLog, ReqMem
from .base import Alloc, Policy
from .work import window_pairs

INF = float("inf")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class BudgetPolicy(Policy):
    kinds = ("budget",)
    static_weight = 0.5
    token_paged = True

    @staticmethod
    def step_work(spec, start: int, end: int, images, encoder_runs) -> tuple[int, int, int]:
        """A budget B costs what a window of B does: each query attends to
        at most B kept tokens (the chunk causally)."""
        w, b = spec.budget, spec.bytes_per_token
        return window_pairs(start, end, w), (end - max(0, start - w + 1)) * b, (end - start) * b

    @property
    def budget(self) -> int:
        return self.group.spec.budget

    def step_units(self, start: int, end: int, encoder_tokens: int) -> int:
        """Tokens a step computing [start, end) holds: what the layer kept
        plus the chunk it writes; a decode at the budget overwrites a slot."""
        if end - start == 1:
            return min(end, self.budget)
        return min(start, self.budget) + end - start

    def grow(self, r: ReqMem, start: int, end: int, alloc: Alloc, pool: PagePool, log: ActionLog) -> bool:
        table = r.tables[self.gid]
        keep = _ceil_div(min(end + r.lookahead, self.budget), self.P)
        while len(table) < keep:
            page = alloc()
            if page is None:
                return False
            table.append(page)
        pending = r.pending[self.gid]
        for _ in range(_ceil_div(self.step_units(start, end, 0), self.P) - len(table)):
            page = alloc()
            if page is None:
                return False
            pending.append((page, None, 0))   # the chunk past the budget: released at commit
        return True

    def pages_needed(self, r: ReqMem, start: int, end: int, hit_tokens: int, pool: PagePool) -> tuple[int, int]:
        have = len(r.tables[self.gid])
        keep = max(have, _ceil_div(min(end + r.lookahead, self.budget), self.P))
        return keep - have + max(0, _ceil_div(self.step_units(start, end, 0), self.P) - keep), 0

    def grow_threshold(self, r: ReqMem) -> float:
        # below the budget a decode needs a page at each page boundary; at
        # it, none (multi-token steps always reach `grow`)
        held = len(r.tables[self.gid]) * self.P
        return INF if held >= self.budget else held - r.lookahead

    def commit_threshold(self, r: ReqMem) -> float:
        return INF   # nothing to publish or release (pending pages force a commit)

    def longest_hit(self, r: ReqMem, upper: int, pool: PagePool) -> int:
        return 0

    def take_hit(self, r: ReqMem, length: int, pool: PagePool, log: ActionLog) -> None:
        if length:
            raise ValueError(f"a budget layer serves no prefix hit (asked for {length} tokens)")

    def hit_step(self) -> int | None:
        return None

    def priority(self, r: ReqMem, index: int) -> int:
        return -(index + 1) * self.P

    def needed_units(self, r: ReqMem) -> int:
        if r.alloc_end <= r.num_computed:
            return min(r.num_computed, self.budget)
        return self.step_units(r.num_computed, r.alloc_end, 0)

    def footprint_units(self, context: int, encoder_tokens: int) -> int:
        return min(context, self.budget)

    def footprint_pages(self, context: int, encoder_tokens: int) -> int:
        return _ceil_div(min(context, self.budget), self.P)

    def peak_pages(self, context: int, encoder_tokens: int, chunk: int) -> int:
        return _ceil_div(min(context, self.budget + chunk), self.P)
