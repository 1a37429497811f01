"""Undo for the page pool: what makes a failed allocation side-effect free.

An allocation that the manager cannot prove will succeed runs inside a
journal level (`PagePool.begin`).  Before the pool first changes a small
page or a large page in that level it saves the page's state; `rollback`
puts every saved page back exactly (references, keys, stamps, free-slot
lists, owners, the free large-page stack and the per-group counters), so
pages taken, cached pages evicted and pages moved by compaction are all
undone, and the next allocation sees the very pool the failed one saw.
`commit` keeps the changes (a nested level hands its saved states to the
level below, which needs the state at its own start).

Only the lazy heaps and version counters are not restored: a rollback
re-files every restored page with a fresh version, and stale heap entries
are skipped on pop as always, so the eviction order is the one before.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pool import PagePool


@dataclass
class Level:
    """Saved states of one journal level (see module doc)."""

    counters: tuple
    pages: dict[tuple[int, int], tuple] = field(default_factory=dict)
    larges: dict[int, tuple] = field(default_factory=dict)
    free_ops: list[tuple[bool, int]] = field(default_factory=list)   # (pushed?, large page)
    new_owners: set[Hashable] = field(default_factory=set)
    unit_ops: list[tuple[int, Hashable, Hashable]] = field(default_factory=list)   # keys dropped from units


def counters(pool: "PagePool") -> tuple:
    return (list(pool.held), list(pool.idle), list(pool.n_used), list(pool.n_cached), list(pool.n_shared),
            list(pool.evictions))


def save_page(level: Level, pool: "PagePool", gid: int, page: int) -> None:
    k = (gid, page)
    if k not in level.pages:
        level.pages[k] = (pool.ref[gid][page], pool.key[gid][page], pool.stamp[gid][page], pool.born[gid][page])


def save_large(level: Level, pool: "PagePool", lp: int) -> None:
    if lp not in level.larges:
        slots = pool.free_slots.get(lp)
        level.larges[lp] = (pool.large_group[lp], pool.large_owner[lp], pool.large_used[lp],
                            pool.large_cached[lp], None if slots is None else list(slots), pool.vacated[lp])


def merge(inner: Level, outer: Level) -> None:
    """Keep an inner level's changes: the outer level must still be able
    to restore the state at its own start."""
    for k, v in inner.pages.items():
        outer.pages.setdefault(k, v)
    for k, v in inner.larges.items():
        outer.larges.setdefault(k, v)
    outer.free_ops += inner.free_ops
    outer.new_owners |= inner.new_owners
    outer.unit_ops += inner.unit_ops


def rollback(level: Level, pool: "PagePool") -> None:
    """Restore the pool to the state at the level's start (module doc)."""
    for pushed, lp in reversed(level.free_ops):   # the free large-page stack
        if pushed:
            assert pool.free_large[-1] == lp, "free large-page stack changed out of order"
            pool.free_large.pop()
        else:
            pool.free_large.append(lp)
    for (gid, page), (ref, key, stamp, born) in level.pages.items():
        cur = pool.key[gid][page]
        if cur is not None and pool.cache_map[gid].get(cur) == page:
            del pool.cache_map[gid][cur]
        pool.ref[gid][page], pool.key[gid][page] = ref, key
        pool.stamp[gid][page], pool.born[gid][page] = stamp, born
    for (gid, page), (_, key, _, _) in level.pages.items():
        if key is not None:
            pool.cache_map[gid][key] = page
    for gid, key, unit in reversed(level.unit_ops):
        pool.unit_of[gid][key] = unit
        pool.unit_keys[gid].setdefault(unit, set()).add(key)
    for lp, (group, owner, used, cached, slots, vacated) in level.larges.items():
        _unfile_owner(pool, lp)
        pool.large_group[lp], pool.large_owner[lp] = group, owner
        pool.large_used[lp], pool.large_cached[lp], pool.vacated[lp] = used, cached, vacated
        if slots is None:
            pool.free_slots.pop(lp, None)
        else:
            pool.free_slots[lp] = slots
    (pool.held, pool.idle, pool.n_used, pool.n_cached, pool.n_shared, pool.evictions) = level.counters
    for owner in level.new_owners:
        pool.owned.pop(owner, None)
        pool.own_open.pop(owner, None)
    for lp in level.larges:
        _refile(pool, lp)
    for gid, page in level.pages:
        if pool.is_evictable(gid, page):
            pool.small_version[gid][page] += 1
            pool._push_cached(gid, page)


def _unfile_owner(pool: "PagePool", lp: int) -> None:
    owner, gid = pool.large_owner[lp], pool.large_group[lp]
    if owner is not None and gid is not None and owner in pool.owned:
        pool.owned[owner][gid].discard(lp)
        pool.own_open[owner][gid].discard(lp)


def _refile(pool: "PagePool", lp: int) -> None:
    """A restored large page goes back into its owner's sets and the heaps."""
    gid = pool.large_group[lp]
    pool.large_version[lp] += 1
    if gid is None:
        return
    owner = pool.large_owner[lp]
    if owner is not None and owner in pool.owned:
        pool.owned[owner][gid].add(lp)
        if pool.free_slots.get(lp):
            pool.own_open[owner][gid].add(lp)
    if pool.free_slots.get(lp):
        pool._push_open(gid, lp)
    pool._maybe_fully_evictable(lp)
