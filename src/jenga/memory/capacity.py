"""Capacity questions the scheduler asks, and the usage report.

Read-only views of a manager's pool and policies, kept apart from the
manager's state changes: whether a request fits the pool at all
(`fits_alone`, `large_pages_alone`), whether it fits now (`has_room_for`),
whether one allocation's pages could be had at all or surely can
(`could_hold`, `surely_holds`), and the bytes each group uses, caches and
still needs (`usage`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .plan import MemoryPlan
from .pool import PagePool
from .reqstate import ReqMem
from .rules import AllocatorRules
from .usage import GroupUsage, MemoryUsage


def _peak(p, num_tokens: int, encoder_tokens: int, chunk: int | None) -> int:
    # the peak, not the end state: a window group holds a whole chunk past
    # its window while the chunk runs; token groups get one page of margin
    return p.peak_pages(num_tokens, encoder_tokens, chunk or num_tokens) + (0 if p.recurrent else 1)


def large_pages_alone(policies: Sequence, plan: MemoryPlan, num_tokens: int, encoder_tokens: int,
                      chunk: int | None = None) -> list[int]:
    """Per group: the large pages a request of `num_tokens` tokens (prompt
    + output) and `encoder_tokens` image tokens, computed at most `chunk`
    tokens a step, holds at its peak with nothing else in the pool."""
    return [-(-_peak(p, num_tokens, encoder_tokens, chunk) // g.per_large) for p, g in zip(policies, plan.groups)]


def fits_alone(policies: Sequence, plan: MemoryPlan, num_tokens: int, encoder_tokens: int,
               chunk: int | None = None) -> bool:
    """Whether such a request (see large_pages_alone) fits in the pool with
    nothing else."""
    need = large_pages_alone(policies, plan, num_tokens, encoder_tokens, chunk)
    if plan.static_share:   # each group must fit its own partition
        return all(n <= s for n, s in zip(need, plan.static_share))
    return sum(need) <= plan.num_large_pages


def has_room_for(policies: Sequence, plan: MemoryPlan, pool: PagePool, rules: AllocatorRules, num_tokens: int,
                 encoder_tokens: int, chunk: int | None = None) -> bool:
    """Whether the pool could now hold a whole request of `num_tokens`
    tokens, computed at most `chunk` tokens a step (default: all at once),
    at its peak: in free slots of its groups' large pages, then in free or
    evictable large pages, then (with compaction) in large pages that other
    groups' spare free slots could empty (a conservative test for admitting
    a prompt that will take several chunks to prefill)."""
    need, spare = [], 0
    for p, g in zip(policies, plan.groups):
        pages, slots = _peak(p, num_tokens, encoder_tokens, chunk), pool.num_free_slots(g.gid)
        need.append(-(-max(0, pages - slots) // g.per_large))
        spare += max(0, slots - pages) // g.per_large
    if plan.static_share:
        return all(n <= pool.num_reclaimable_large(g) for g, n in enumerate(need))
    return sum(need) <= pool.num_reclaimable_large() + (spare if rules.compaction else 0)


def could_hold(plan: MemoryPlan, pool: PagePool, needs: Sequence[int]) -> bool:
    """Whether `needs[g]` more pages of every group g could be had at all:
    even with every cached page evicted and every group compacted into the
    fewest large pages, each group holds ceil((used + need) / per_large)
    large pages, and they must fit the pool (or each its static share).
    A necessary condition, O(groups): an allocation it rules out is
    refused before it touches the pool."""
    used, pers, share = pool.n_used, pool.per_large, plan.static_share
    total = 0
    for g, n in enumerate(needs):
        held = -(-(used[g] + n) // pers[g])
        if share and held > share[g]:
            return False
        total += held
    return total <= plan.num_large_pages


def surely_holds(plan: MemoryPlan, pool: PagePool, needs: Sequence[int], revived: int = 0) -> bool:
    """Whether `needs[g]` more pages of every group g surely come from
    free large pages and whole evictable ones: while one is left, the
    allocation order never fails.  Group g takes at most ceil(need/per)
    of them, plus, when its large pages have several slots, up to one of
    its own evictable large pages per page (a free slot in one), so at
    most its free slots' worth.  `revived`
    evictable pages turn used first (a prefix hit).  A sufficient
    condition, O(groups): such an allocation needs no undo journal.  A
    static partition counts free large pages within its share only."""
    total = 0
    for g, (n, per) in enumerate(zip(needs, pool.per_large)):
        if not n:
            continue
        k = -(-n // per)
        if plan.static_share:
            if pool.held[g] + k > plan.static_share[g]:
                return False
        elif per > 1:   # each such large page has a free slot of g
            k += min(n, pool.idle[g], pool.num_free_slots(g))
        total += k
    if plan.static_share:
        return total <= pool.num_free_large()
    return total <= pool.num_free_large() + sum(pool.idle) - revived


def usage(policies: Sequence, plan: MemoryPlan, pool: PagePool, active: list[ReqMem]) -> MemoryUsage:
    """Bytes used, cached, free and still needed by the `active` requests
    (those holding an allocation), overall and per group."""
    per = []
    for p, g in zip(policies, plan.groups):
        used, cached = pool.counts(g.gid)
        unit = g.spec.unit_bytes() * len(g.layers)
        # a page shared by k requests holds its tokens once, not k times
        needed = max(0, p.total_needed_units(active) - pool.n_shared[g.gid] * g.page_tokens) * unit
        per.append(GroupUsage(g.gid, g.spec.describe(), used * g.small_page_bytes, cached * g.small_page_bytes,
                              needed, pool.held[g.gid] * plan.large_page_bytes))
    return MemoryUsage(plan.pool_bytes, pool.num_free_large() * plan.large_page_bytes, pool.num_free_large(),
                       tuple(per))
