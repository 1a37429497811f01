"""PagePool.check_invariants, kept apart from the pool's fast paths: an
exhaustive, slow cross-check that tests call after every operation (never
the engine).  Every large page is free or in exactly one group; its used,
evictable and free small pages add up; the cache index, keys, counters,
heaps and idle counts agree; nothing leaks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import PagePool


def check_pool(self: "PagePool", refs: list[dict[int, int]]) -> None:
    """Assert the pool agrees with `refs` (gid -> page -> references
    the manager's requests hold) and with itself: every large page is
    free or in exactly one group; its used / evictable / free small
    pages add up; the cache index and keys agree; nothing leaks."""
    n = len(self.large_group)
    assert sorted(self.free_large) == [lp for lp in range(n) if self.large_group[lp] is None], \
        "free large-page list disagrees with large-page owners"
    assert len(set(self.free_large)) == len(self.free_large), "large page freed twice"
    for gid, per in enumerate(self.per_large):
        assert self.held[gid] == sum(1 for g in self.large_group if g == gid), f"group {gid}: held count"
        if self.share is not None:
            assert self.held[gid] <= self.share[gid], f"group {gid} exceeds its static share"
        for key, page in self.cache_map[gid].items():
            assert self.key[gid][page] == key, f"group {gid}: cache index points to page {page} wrongly"
        assert set(self.unit_of[gid]) <= set(self.cache_map[gid]), f"group {gid}: an uncached key is in a unit"
        assert {(k, u) for u, ks in self.unit_keys[gid].items() for k in ks} == set(self.unit_of[gid].items()), \
            f"group {gid}: eviction units disagree"
        used = cached = 0
        for page in range(n * per):
            lp, ref, key = page // per, self.ref[gid][page], self.key[gid][page]
            assert ref == refs[gid].get(page, 0), \
                f"group {gid} page {page}: ref {ref} but requests hold {refs[gid].get(page, 0)}"
            if self.large_group[lp] != gid:
                assert ref == 0 and key is None, f"group {gid} page {page} lives in a foreign large page"
                continue
            used += ref > 0
            cached += ref == 0 and key is not None
        assert (used, cached) == (self.n_used[gid], self.n_cached[gid]), f"group {gid}: counters drifted"
        shared = sum(max(0, r - 1) for r in self.ref[gid])
        assert shared == self.n_shared[gid], f"group {gid}: shared-reference count drifted"
        _check_heaps(self, gid, per)
    for lp in range(n):
        gid = self.large_group[lp]
        if gid is None:
            assert lp not in self.free_slots, f"free large page {lp} still has slots"
            continue
        per = self.per_large[gid]
        pages = range(lp * per, lp * per + per)
        used = sum(1 for p in pages if self.ref[gid][p] > 0)
        cached = sum(1 for p in pages if self.ref[gid][p] == 0 and self.key[gid][p] is not None)
        free = sorted(p for p in pages if self.ref[gid][p] == 0 and self.key[gid][p] is None)
        assert (used, cached) == (self.large_used[lp], self.large_cached[lp]), f"large page {lp}: counts"
        slots = self.free_slots.get(lp)   # a full page has no (empty) entry
        assert (None if slots is None else sorted(slots)) == (free or None), f"large page {lp}: free-slot list"
        assert used + cached > 0, f"large page {lp} is wholly free but not returned to the pool"
        owner = self.large_owner[lp]
        if owner is not None and owner in self.own_open:
            assert (lp in self.own_open[owner][gid]) == bool(self.free_slots.get(lp)), \
                f"large page {lp}: owner's open set disagrees with its free slots"

def _check_heaps(self: "PagePool", gid: int, per: int) -> None:
    """Every evictable page, fully evictable large page and open large
    page of gid can be found in its heap (with its current stamp), and
    the idle count agrees: what heap rebuilds must never lose."""
    live_small = {(e[0], e[1]) for e in self.cached_heap[gid] if e[2] == self.small_version[gid][e[1]]}
    live_large = {(e[0], e[1]) for e in self.large_heap[gid] if self._large_live(gid, e)}
    idle = 0
    for lp, g in enumerate(self.large_group):
        if g != gid:
            continue
        pages = range(lp * per, lp * per + per)
        cached = [p for p in pages if self.is_evictable(gid, p)]
        assert all((self.stamp[gid][p], p) in live_small for p in cached), f"large page {lp}: page not in heap"
        idle += self.large_used[lp] == 0
        if self.large_used[lp] == 0:
            latest = max(self.stamp[gid][p] for p in cached)
            assert (latest, lp) in live_large, f"large page {lp}: fully evictable but not in heap"
        if self.free_slots.get(lp):
            assert lp in self.open_heap[gid], f"large page {lp}: open but not in heap"
    assert idle == self.idle[gid], f"group {gid}: idle large-page count drifted"
