"""The two-level page pool: large pages carved into per-group small pages.

The pool owns every page's state.  A small page is *free* (ref 0, no key),
*used* (ref > 0) or *evictable* (ref 0, holds cached content under a key).
A large page belongs to one group while any of its small pages is not free,
and returns to the pool the moment all of them are free.

Allocating one small page of group g for an owner tries, in order (Jenga):
1. a free slot in a large page the owner opened for g;
2. an empty large page;
3. any free slot of g;
4. evicting the least recently used fully evictable large page;
5. evicting the least recently used evictable small page of g.
The paper evicts (4) before taking another owner's slot (3), to keep a
request's pages together; that evicts cached prefixes while free slots sit
unused, and the stranding it avoids is now undone by compaction (the
manager's sixth step, memory/compact.py).  Baselines without
request-aware placement try 3, 2, 5, 4.  The `static` baseline may only
take steps 2 and 4 within its group's share.

`move` relocates a used or cached page into a free slot of its group (the
state transition compaction is made of; memory/compact.py picks which).

Eviction order is by stamp `(time, priority)`, smallest first; the manager
chooses stamps (see policies).  Heaps are lazy: stale entries are skipped,
and a heap is rebuilt from its live entries once stale ones outnumber them,
so it stays proportional to the pages it can return.  Counters kept on
every state change (idle large pages, the cache generation) make the
scheduler's questions O(groups) instead of O(pages).
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Hashable

from . import pool_journal as journal
from .plan import MemoryPlan
from .rules import AllocatorRules

Stamp = tuple[int, int]


def _zeros(n: int) -> array:
    return array("q", bytes(8 * n))


class PagePool:
    """Page states for every group of one plan.  Mutated only via methods."""

    HEAP_SLACK = 64   # stale heap entries tolerated beyond twice the live ones

    def __init__(self, plan: MemoryPlan, rules: AllocatorRules) -> None:
        self.plan, self.rules = plan, rules
        n, groups = plan.num_large_pages, plan.groups
        self.per_large = [g.per_large for g in groups]
        self.large_group: list[int | None] = [None] * n
        self.large_owner: list[Hashable | None] = [None] * n
        # per-page integers live in arrays: a list of n ints is n objects
        # for the garbage collector to visit on every full collection
        self.large_used = _zeros(n)
        self.large_cached = _zeros(n)
        self.large_version = _zeros(n)
        self.free_large = array("q", range(n - 1, -1, -1))  # pop() yields the lowest id
        self.held = [0] * len(groups)
        self.ref = [_zeros(n * p) for p in self.per_large]
        self.key: list[list[Hashable | None]] = [[None] * (n * p) for p in self.per_large]
        self.stamp: list[list[Stamp]] = [[(0, 0)] * (n * p) for p in self.per_large]
        self.small_version = [_zeros(n * p) for p in self.per_large]
        # the step (manager clock) each page was taken or moved in: such
        # pages stay put for the rest of the step (memory/compact.py)
        self.born = [_zeros(n * p) for p in self.per_large]
        self.now = 0
        # held large page -> its free slots; a full page has no entry (one
        # empty list per page would be ~all large pages, each a GC object)
        self.free_slots: dict[int, list[int]] = {}
        self.open_heap: list[list[int]] = [[] for _ in groups]
        self.owned: dict[Hashable, list[set[int]]] = {}
        self.own_open: dict[Hashable, list[set[int]]] = {}   # owned large pages with a free slot
        self.cached_heap: list[list] = [[] for _ in groups]
        self.large_heap: list[list] = [[] for _ in groups]
        self.cache_map: list[dict[Hashable, int]] = [{} for _ in groups]
        # eviction units (an image's pages): key -> unit, unit -> its keys;
        # evicting one page of a unit evicts the unit (see `_evict_small`)
        self.unit_of: list[dict[Hashable, Hashable]] = [{} for _ in groups]
        self.unit_keys: list[dict[Hashable, set]] = [{} for _ in groups]
        self.share = list(plan.static_share) if rules.partitioned else None
        self.evictions = [0] * len(groups)
        self.n_used = [0] * len(groups)
        self.n_cached = [0] * len(groups)
        self.n_shared = [0] * len(groups)   # sum over pages of (references - 1)
        self.idle = [0] * len(groups)       # large pages of the group with no page in use
        # bumped whenever a key enters or leaves a cache index: a prefix
        # lookup made at one generation is still valid at the same one
        self.generation = 0
        # journal levels (memory/pool_journal.py): while one is open, every
        # page and large page is saved before its first change, so a failed
        # allocation can be undone exactly; None when no level is open
        self._levels: list[journal.Level] = []
        self._j: journal.Level | None = None
        # the step in which a large page last had a page moved out of it
        # (+1, so 0 means never): compaction puts no page there in that step
        self.vacated = _zeros(n)
        self._steps = [{pack: self._steps_for(per, pack) for pack in (False, True)} for per in self.per_large]

    def _steps_for(self, per: int, pack: bool) -> tuple:
        """The allocation order (module doc).  A group whose small page
        fills a large page never has a free slot in a held large page (it
        returns to the pool as its page frees), so it skips the slot steps."""
        if self.rules.request_aware and pack:
            steps = (self._own_slot, self._any_slot, self._empty_large, self._evict_large, self._evict_small)
        elif self.rules.request_aware:
            steps = (self._own_slot, self._empty_large, self._any_slot, self._evict_large, self._evict_small)
        else:
            steps = (self._any_slot, self._empty_large, self._evict_small, self._evict_large)
        return steps if per > 1 else tuple(s for s in steps if s not in (self._own_slot, self._any_slot))

    # ----------------------------------------------------------- queries
    def large_of(self, gid: int, page: int) -> int:
        return page // self.per_large[gid]

    def is_evictable(self, gid: int, page: int) -> bool:
        return self.ref[gid][page] == 0 and self.key[gid][page] is not None

    def lookup(self, gid: int, key: Hashable) -> int | None:
        """Page holding cached content `key` in group gid, or None."""
        return self.cache_map[gid].get(key)

    def num_free_large(self) -> int:
        return len(self.free_large)

    def cached_mask(self, gid: int, keys: list[Hashable]) -> list[bool]:
        """For each key, whether group gid caches it (one pass, no per-key
        method call: prefix lookups test every page of a prompt)."""
        index = self.cache_map[gid]
        return [k in index for k in keys]

    def num_reclaimable_large(self, gid: int | None = None) -> int:
        """Large pages that are free or hold only evictable pages (of group
        gid's partition when the pool is partitioned).  O(groups)."""
        if self.share is not None and gid is not None:
            return self.share[gid] - self.held[gid] + self.idle[gid]
        return len(self.free_large) + sum(self.idle)

    def num_free_slots(self, gid: int) -> int:
        """Free small-page slots in the large pages group gid holds."""
        return self.held[gid] * self.per_large[gid] - self.n_used[gid] - self.n_cached[gid]

    def counts(self, gid: int) -> tuple[int, int]:
        """(used, evictable) small pages of group gid."""
        return self.n_used[gid], self.n_cached[gid]

    # ----------------------------------------------------------- journal
    def begin(self) -> None:
        """Open a journal level: changes from here on can be undone."""
        self._levels.append(journal.Level(journal.counters(self)))
        self._j = self._levels[-1]

    def commit(self) -> None:
        """Keep the changes of the innermost level."""
        level = self._levels.pop()
        if self._levels:
            journal.merge(level, self._levels[-1])
        self._j = self._levels[-1] if self._levels else None

    def rollback(self) -> None:
        """Undo every change of the innermost level and close it."""
        level = self._levels.pop()
        self._j = self._levels[-1] if self._levels else None
        journal.rollback(level, self)

    def _save(self, gid: int, page: int) -> None:
        """Save a page and its large page before their first change in the
        open journal level (memory/pool_journal.py; inlined: every page an
        allocation under the journal takes comes here)."""
        j, k = self._j, (gid, page)
        if k not in j.pages:
            j.pages[k] = (self.ref[gid][page], self.key[gid][page], self.stamp[gid][page], self.born[gid][page])
        lp = page // self.per_large[gid]
        if lp not in j.larges:
            journal.save_large(j, self, lp)

    def _pop_free_large(self) -> int:
        lp = self.free_large.pop()
        if self._j is not None:
            self._j.free_ops.append((False, lp))
            journal.save_large(self._j, self, lp)
        return lp

    # -------------------------------------------------------- allocation
    def allocate(self, gid: int, owner: Hashable, pack: bool = False) -> int | None:
        """Take one small page of gid for owner (ref 1); None when nothing
        can be freed.  May evict cached pages (their keys are dropped).
        `pack`: the owner will not fill a large page of this group, so it
        takes free slots in others' large pages before opening its own
        (keeping whole large pages free for groups with big pages)."""
        for step in self._steps[gid][pack]:
            page = step(gid, owner)
            if page is not None:
                self._take(gid, page)
                return page
        return None

    def _own_slot(self, gid: int, owner: Hashable) -> int | None:
        mine = self.own_open.get(owner)
        if not mine or not mine[gid]:
            return None
        return self.free_slots[min(mine[gid])][-1]

    def _empty_large(self, gid: int, owner: Hashable) -> int | None:
        if not self.free_large or (self.share is not None and self.held[gid] >= self.share[gid]):
            return None
        return self._open_large(self._pop_free_large(), gid, owner)

    def _evict_large(self, gid: int, owner: Hashable) -> int | None:
        candidates = [gid] if self.share is not None else range(len(self.large_heap))
        best = None
        for g in candidates:
            entry = self._peek_large(g)
            if entry is not None and (best is None or entry < best):
                best = entry
        if best is None:
            return None
        _, lp, _ = best
        heapq.heappop(self.large_heap[self.large_group[lp]])
        g_old = self.large_group[lp]
        base = lp * self.per_large[g_old]
        siblings = []
        for page in range(base, base + self.per_large[g_old]):
            key = self.key[g_old][page]
            if key is not None:
                if self.unit_of[g_old]:
                    siblings += self._unit_siblings(g_old, key)
                self._drop_key(g_old, page)
                self._to_free(g_old, page, requeue=False)
        assert self.large_group[lp] is None and self.free_large[-1] == lp, "evicted large page did not empty"
        self._pop_free_large()
        self._drop_pages(g_old, siblings)   # the rest of the images it held: an image goes whole
        return self._open_large(lp, gid, owner)

    def _any_slot(self, gid: int, owner: Hashable) -> int | None:
        heap = self.open_heap[gid]
        while heap:
            lp = heap[0]
            if self.large_group[lp] == gid and self.free_slots.get(lp):
                return self.free_slots[lp][-1]
            heapq.heappop(heap)
        return None

    def _evict_small(self, gid: int, owner: Hashable) -> int | None:
        heap = self.cached_heap[gid]
        while heap:
            _, page, ver = heapq.heappop(heap)
            if ver == self.small_version[gid][page] and self.is_evictable(gid, page):
                if self.unit_of[gid]:   # the rest of its image first: this page must be freed last
                    self._drop_pages(gid, self._unit_siblings(gid, self.key[gid][page]))
                self._drop_key(gid, page)
                self._to_free(gid, page)
                if self.large_group[self.large_of(gid, page)] is None:   # its large page emptied
                    return self._empty_large(gid, owner)
                return page
        return None

    def _unit_siblings(self, gid: int, key: Hashable) -> list[int]:
        """Cached pages of gid in key's eviction unit, other than key's."""
        unit = self.unit_of[gid].get(key)
        if unit is None:
            return []
        index = self.cache_map[gid]
        return [index[k] for k in self.unit_keys[gid][unit] if k != key and k in index]

    def _drop_pages(self, gid: int, pages: list[int]) -> None:
        """Drop the cached content of `pages`: evictable ones become free,
        ones in use stay in use, no longer found by their key."""
        for page in pages:
            if self.key[gid][page] is None:
                continue
            self._drop_key(gid, page)
            if not self.ref[gid][page]:
                self._to_free(gid, page)

    def _open_large(self, lp: int, gid: int, owner: Hashable) -> int:
        """Give empty large page lp to gid and owner; returns its first
        slot, which the caller takes at once.  A page of one slot is then
        full, so it gets no free-slot list and is never filed as open."""
        per = self.per_large[gid]
        if self._j is not None:
            journal.save_large(self._j, self, lp)
        self.large_group[lp], self.large_owner[lp] = gid, owner
        self.held[gid] += 1
        self.idle[gid] += 1   # until _take marks the slot used
        if per > 1:
            self.free_slots[lp] = list(range(lp * per + per - 1, lp * per - 1, -1))
            self._push_open(gid, lp)
        if owner is not None:
            owned = self.owned.get(owner)
            if owned is None:
                if self._j is not None:
                    self._j.new_owners.add(owner)
                owned = self.owned[owner] = [set() for _ in self.per_large]
                self.own_open[owner] = [set() for _ in self.per_large]
            owned[gid].add(lp)
            if per > 1:
                self.own_open[owner][gid].add(lp)
        return lp * per

    def _take(self, gid: int, page: int) -> None:
        """Mark free `page` used (ref 1): the last free slot of its large
        page's list, or the one slot of a large page just opened."""
        lp = page // self.per_large[gid]
        if self._j is not None:
            self._save(gid, page)
        slots = self.free_slots.get(lp)
        if slots is not None:
            assert slots[-1] == page
            slots.pop()
            if not slots:
                del self.free_slots[lp]
                self._own_open_discard(lp, gid)
        assert not self.ref[gid][page], f"group {gid} page {page} is not free"
        self.ref[gid][page] = 1
        self.born[gid][page] = self.now
        self.n_used[gid] += 1
        if not self.large_used[lp]:
            self.large_version[lp] += 1   # no longer fully evictable
            self.idle[gid] -= 1
        self.large_used[lp] += 1

    # ---------------------------------------------------- ref counting
    def incref(self, gid: int, page: int) -> None:
        """Add a reference (a prefix hit); an evictable page becomes used."""
        if self._j is not None:
            self._save(gid, page)
        if self.ref[gid][page] == 0:
            if self.key[gid][page] is None:
                raise ValueError(f"group {gid} page {page} is free; cannot share it")
            lp = self.large_of(gid, page)
            self.large_cached[lp] -= 1
            self.n_cached[gid] -= 1
            self.n_used[gid] += 1
            self.small_version[gid][page] += 1
            self._set_used(lp, +1)
        else:
            self.n_shared[gid] += 1
        self.ref[gid][page] += 1

    def release(self, gid: int, page: int, stamp: Stamp) -> None:
        """Drop one reference.  At zero the page becomes evictable with
        `stamp` if it holds cached content, otherwise free."""
        refs = self.ref[gid]
        if refs[page] <= 0:
            raise ValueError(f"group {gid} page {page} released more often than taken")
        if self._j is not None:
            self._save(gid, page)
        refs[page] -= 1
        if refs[page]:
            self.n_shared[gid] -= 1
            return
        lp = page // self.per_large[gid]
        used = self.large_used[lp] = self.large_used[lp] - 1
        if not used:
            self.idle[gid] += 1
        self.n_used[gid] -= 1
        if self.key[gid][page] is None:
            self.free_slots.setdefault(lp, []).append(page)
            self._after_free_slot(gid, lp)
            if not used and self.large_group[lp] is not None:
                self._maybe_fully_evictable(lp)
            return
        self.stamp[gid][page] = stamp
        self.small_version[gid][page] += 1
        self.large_cached[lp] += 1
        self.n_cached[gid] += 1
        self._push_cached(gid, page)
        if not used:   # its large page may now hold only cached content
            self._maybe_fully_evictable(lp)

    def touch(self, gid: int, page: int, stamp: Stamp) -> bool:
        """Re-stamp an evictable page as used at `stamp` (a later access
        than its release); returns False, changing nothing, when the page
        is not evictable."""
        if not self.is_evictable(gid, page):
            return False
        self.stamp[gid][page] = stamp
        self.small_version[gid][page] += 1
        self._push_cached(gid, page)
        self._maybe_fully_evictable(self.large_of(gid, page))
        return True

    def set_key(self, gid: int, page: int, key: Hashable, unit: Hashable | None = None) -> bool:
        """Record that used `page` holds content `key`, part of eviction
        unit `unit` if given (all cached pages of a unit are evicted
        together).  An evictable older copy of the same content is dropped
        in favour of this newer one (it would otherwise be evicted first and
        the content lost); returns False, recording nothing, when a copy in
        use already holds the key."""
        if self.ref[gid][page] <= 0:
            raise ValueError(f"group {gid} page {page} is not in use")
        index, keys = self.cache_map[gid], self.key[gid]
        old = index.get(key)   # pages are ints: None means absent
        if old is not None and old != page and keys[page] is None and self.is_evictable(gid, old):
            self._drop_key(gid, old)
            self._to_free(gid, old)
            old = None
        if keys[page] is not None or old is not None:
            return old == page
        keys[page] = key
        index[key] = page
        if unit is not None:
            self.unit_of[gid][key] = unit
            self.unit_keys[gid].setdefault(unit, set()).add(key)
        self.generation += 1
        return True

    def move(self, gid: int, src: int, dst: int) -> None:
        """Give free slot `dst` of group gid the state of used or evictable
        page `src` (references, cache key, stamp) and free `src`, returning
        its large page to the pool if that was its last page (compaction,
        memory/compact.py).  Per-group counts do not change; `dst` counts as
        taken in the current step."""
        per = self.per_large[gid]
        ls, ld = src // per, dst // per
        ref, key = self.ref[gid][src], self.key[gid][src]
        slots = self.free_slots.get(ld, ())
        if not (ref or key is not None) or self.large_group[ld] != gid or dst not in slots:
            raise ValueError(f"group {gid}: cannot move page {src} onto page {dst} (need a page in use or "
                             "cached, and a free slot of a large page the group holds)")
        if self._j is not None:
            self._save(gid, src)
            self._save(gid, dst)
        self.vacated[ls] = self.now + 1
        slots.remove(dst)
        if not slots:
            del self.free_slots[ld]
            self._own_open_discard(ld, gid)
        self.ref[gid][dst], self.key[gid][dst], self.stamp[gid][dst] = ref, key, self.stamp[gid][src]
        self.born[gid][dst] = self.now
        self.small_version[gid][dst] += 1
        self.small_version[gid][src] += 1
        self.ref[gid][src], self.key[gid][src] = 0, None
        if key is not None:
            self.cache_map[gid][key] = dst
        if ref:
            self._set_used(ld, +1)
            self.large_used[ls] -= 1
            if not self.large_used[ls]:
                self.idle[gid] += 1
        else:
            self.large_cached[ld] += 1
            self.large_cached[ls] -= 1
            self._push_cached(gid, dst)
            self._maybe_fully_evictable(ld)
        self.large_version[ls] += 1
        self.free_slots.setdefault(ls, []).append(src)
        self._after_free_slot(gid, ls)

    def _own_open_discard(self, lp: int, gid: int) -> None:
        owner = self.large_owner[lp]
        if owner is not None and owner in self.own_open:
            self.own_open[owner][gid].discard(lp)

    def drop_owner(self, owner: Hashable) -> None:
        """The owner ended: its large pages no longer prefer it."""
        self.own_open.pop(owner, None)
        for lps in self.owned.pop(owner, ()):
            for lp in lps:
                if self.large_owner[lp] == owner:
                    self.large_owner[lp] = None

    def evict_all(self) -> int:
        """Drop every evictable page's content (prefix-cache reset); returns
        how many pages were dropped."""
        dropped = 0
        for gid in range(len(self.per_large)):
            for page in list(self.cache_map[gid].values()):
                if self.is_evictable(gid, page):
                    self._drop_key(gid, page)
                    self._to_free(gid, page)
                    dropped += 1
            self.cached_heap[gid].clear()
        return dropped

    # --------------------------------------------------------- internals
    def _set_used(self, lp: int, delta: int) -> None:
        was_idle = self.large_used[lp] == 0
        self.large_used[lp] += delta
        if was_idle and self.large_used[lp] > 0:
            self.large_version[lp] += 1   # no longer fully evictable
            self.idle[self.large_group[lp]] -= 1

    def _drop_key(self, gid: int, page: int) -> None:
        if self._j is not None:
            self._save(gid, page)
        key = self.key[gid][page]
        if self.unit_of[gid]:
            unit = self.unit_of[gid].pop(key, None)
            if unit is not None:
                keys = self.unit_keys[gid][unit]
                keys.discard(key)
                if not keys:
                    del self.unit_keys[gid][unit]
                if self._j is not None:
                    self._j.unit_ops.append((gid, key, unit))
        del self.cache_map[gid][key]
        self.key[gid][page] = None
        self.small_version[gid][page] += 1
        self.evictions[gid] += 1
        self.generation += 1

    def _to_free(self, gid: int, page: int, requeue: bool = True) -> None:
        """An evictable page whose key was just dropped becomes free;
        `requeue` re-files its large page for whole-page eviction."""
        lp = self.large_of(gid, page)
        self.large_cached[lp] -= 1
        self.n_cached[gid] -= 1
        self.free_slots.setdefault(lp, []).append(page)
        self.large_version[lp] += 1
        self._after_free_slot(gid, lp)
        if requeue and self.large_group[lp] is not None:
            self._maybe_fully_evictable(lp)

    def _after_free_slot(self, gid: int, lp: int) -> None:
        slots = self.free_slots[lp]
        owner = self.large_owner[lp]
        if len(slots) == self.per_large[gid]:   # wholly free: back to the pool
            del self.free_slots[lp]
            if owner is not None and owner in self.owned:
                self.owned[owner][gid].discard(lp)
                self.own_open[owner][gid].discard(lp)
            self.large_group[lp] = self.large_owner[lp] = None
            self.held[gid] -= 1
            self.idle[gid] -= 1
            self.large_version[lp] += 1
            self.free_large.append(lp)
            if self._j is not None:
                self._j.free_ops.append((True, lp))
            return
        if len(slots) == 1:
            self._push_open(gid, lp)
            if owner is not None and owner in self.own_open:
                self.own_open[owner][gid].add(lp)

    def _maybe_fully_evictable(self, lp: int) -> None:
        if self.large_used[lp] or not self.large_cached[lp]:
            return
        gid = self.large_group[lp]
        per, stamps = self.per_large[gid], self.stamp[gid]
        if per == 1:
            latest = stamps[lp]
        else:
            keys = self.key[gid]
            latest = max(stamps[p] for p in range(lp * per, lp * per + per) if keys[p] is not None)
        self.large_version[lp] += 1
        heap = self.large_heap[gid]
        heapq.heappush(heap, (latest, lp, self.large_version[lp]))
        if len(heap) > 2 * self.held[gid] + self.HEAP_SLACK:
            self._rebuild(heap, lambda e: self._large_live(gid, e))

    # Lazy heaps keep stale entries until popped; with few evictions they
    # would grow by one entry per release forever.  Rebuilding from the live
    # entries (at most one per page, all distinct) keeps the pop order.
    def _push_cached(self, gid: int, page: int) -> None:
        heap = self.cached_heap[gid]
        heapq.heappush(heap, (self.stamp[gid][page], page, self.small_version[gid][page]))
        if len(heap) > 2 * self.n_cached[gid] + self.HEAP_SLACK:
            ver, ref, key = self.small_version[gid], self.ref[gid], self.key[gid]
            self._rebuild(heap, lambda e: e[2] == ver[e[1]] and not ref[e[1]] and key[e[1]] is not None)

    def _push_open(self, gid: int, lp: int) -> None:
        heap = self.open_heap[gid]
        heapq.heappush(heap, lp)
        if len(heap) > 2 * self.held[gid] + self.HEAP_SLACK:
            heap[:] = sorted({x for x in heap if self.large_group[x] == gid and self.free_slots.get(x)})

    @staticmethod
    def _rebuild(heap: list, live) -> None:
        heap[:] = [e for e in heap if live(e)]
        heapq.heapify(heap)

    def _large_live(self, gid: int, entry) -> bool:
        _, lp, ver = entry
        return ver == self.large_version[lp] and self.large_group[lp] == gid \
            and self.large_used[lp] == 0 and self.large_cached[lp] > 0

    def _peek_large(self, gid: int):
        heap = self.large_heap[gid]
        while heap:
            if self._large_live(gid, heap[0]):
                return heap[0]
            heapq.heappop(heap)
        return None

    # -------------------------------------------------------- invariants
    def check_invariants(self, refs: list[dict[int, int]]) -> None:
        """Assert the pool agrees with `refs` (gid -> page -> references the
        manager's requests hold) and with itself (memory/pool_check.py)."""
        from .pool_check import check_pool

        check_pool(self, refs)
