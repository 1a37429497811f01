"""PagePool: exact page ids for each step of the five-step fallback, whole
large pages returned at once, LRU eviction of large then small pages."""

from __future__ import annotations

import pytest

from helpers import CHUNK8, FULL, SLIDE8, tiny_plan
from jenga.memory.pool import PagePool
from jenga.memory.rules import AllocatorRules


def make(num_large=3, allocator="jenga", share=()):
    # small pages of 16, 32 and 64 bytes: 4, 2 and 1 per 64-byte large page
    plan = tiny_plan([(FULL, 1, 2), (SLIDE8, 1, 4), (CHUNK8, 1, 8)], num_large, allocator,
                     static_share=share)
    return PagePool(plan, AllocatorRules.for_plan(plan))


def check(pool):
    refs = [{p: pool.ref[g][p] for p in range(len(pool.ref[g])) if pool.ref[g][p]} for g in range(3)]
    pool.check_invariants(refs)


def test_request_fills_its_own_large_page_first():
    pool = make()
    assert pool.per_large == [4, 2, 1]
    a = [pool.allocate(0, "A") for _ in range(2)]
    b = pool.allocate(0, "B")              # B opens its own large page
    a.append(pool.allocate(0, "A"))        # A goes back to its own page
    assert a == [0, 1, 2] and b == 4
    assert pool.large_owner[:2] == ["A", "B"]
    check(pool)


def test_large_page_returns_to_pool_when_wholly_free():
    pool = make()
    pages = [pool.allocate(1, "A") for _ in range(2)]
    assert pages == [0, 1] and pool.num_free_large() == 2
    pool.release(1, 0, (0, 0))
    assert pool.num_free_large() == 2      # still half used
    pool.release(1, 1, (0, 0))
    assert pool.num_free_large() == 3 and pool.large_group[0] is None
    check(pool)


def test_evicts_lru_fully_evictable_large_page_before_taking_foreign_slots():
    pool = make(num_large=3)
    for lp, owner in enumerate("ABC"):
        p = pool.allocate(0, owner)
        pool.set_key(0, p, f"k{owner}")
        pool.release(0, p, (10 - lp, 0))   # C's page is the oldest
    # D wants a group-1 page: no empty large page; the LRU evictable one is C's
    assert pool.allocate(1, "D") == 4      # large page 2 -> group-1 pages 4, 5
    assert pool.lookup(0, "kC") is None and pool.lookup(0, "kA") == 0
    check(pool)


def test_takes_a_foreign_free_slot_before_evicting_a_cached_large_page():
    pool = make(num_large=3)
    a = [pool.allocate(0, "A") for _ in range(2)]          # large page 0: slots 2, 3 free
    b = pool.allocate(0, "B")                              # large page 1
    pool.set_key(0, b, "kB")
    pool.release(0, b, (1, 0))                             # large page 1: fully evictable
    c = pool.allocate(0, "C")                              # large page 2
    assert (a, b, c) == ([0, 1], 4, 8)
    # D: no own page, no empty page; a free slot beats evicting B's cached page
    assert pool.allocate(0, "D") == 2 and pool.lookup(0, "kB") == 4
    check(pool)


def test_takes_any_free_slot_then_evicts_a_small_page():
    pool = make(num_large=2)
    a = [pool.allocate(0, "A") for _ in range(4)]          # large page 0 full
    b = pool.allocate(0, "B")                              # large page 1
    pool.set_key(0, a[1], "x1")
    pool.set_key(0, a[2], "x2")
    pool.release(0, a[1], (5, 0))
    pool.release(0, a[2], (3, 0))
    pool.release(0, a[3], (4, 0))                          # no key: free slot 3
    # C: no own page, no empty page, no fully evictable page -> any free slot
    assert pool.allocate(0, "C") == 3
    c2 = pool.allocate(0, "C")     # B's large page still has free slots 5, 6, 7
    assert c2 == 5 and b == 4
    pool.allocate(0, "C"), pool.allocate(0, "C")
    # now no free slot: evict the LRU evictable small page of group 0 (x2, time 3)
    assert pool.allocate(0, "C") == 2 and pool.lookup(0, "x2") is None
    assert pool.allocate(0, "C") == 1
    assert pool.allocate(0, "C") is None
    check(pool)


def test_baseline_order_prefers_any_free_slot():
    pool = make(allocator="uniform")
    a = pool.allocate(0, "A")
    b = pool.allocate(0, "B")      # no request-aware placement: shares A's large page
    assert (a, b) == (0, 1)
    check(pool)


def test_static_share_caps_a_group():
    pool = make(num_large=3, allocator="static", share=(1, 2, 0))
    assert [pool.allocate(0, "A") for _ in range(5)] == [0, 1, 2, 3, None]
    assert pool.allocate(1, "A") == 2       # large page 1 -> group-1 pages 2, 3
    check(pool)


def test_release_errors_name_the_problem():
    pool = make()
    with pytest.raises(ValueError, match="released more often"):
        pool.release(0, 0, (0, 0))
    with pytest.raises(ValueError, match="is free"):
        pool.incref(0, 0)


def test_newer_copy_of_cached_content_replaces_an_evictable_older_one():
    pool = make()
    old = pool.allocate(0, "A")
    pool.set_key(0, old, "k")
    pool.release(0, old, (1, 0))              # evictable
    new = pool.allocate(0, "B")               # the same content computed again
    assert pool.set_key(0, new, "k") and pool.lookup(0, "k") == new
    assert not pool.is_evictable(0, old) and pool.key[0][old] is None
    busy = pool.allocate(0, "C")
    assert not pool.set_key(0, busy, "k")     # a copy in use keeps the key
    check(pool)


def test_stale_heap_entries_are_dropped_and_eviction_order_kept():
    """Re-stamping an evictable page leaves stale heap entries; once they
    outnumber the live ones the heap is rebuilt, and eviction still takes
    the least recently used page first."""
    runs = []
    for slack in (0, 10_000):
        pool = make(num_large=2)
        pool.HEAP_SLACK = slack
        pages = [pool.allocate(0, "A") for _ in range(4)]      # large page 0
        for i, p in enumerate(pages):
            pool.set_key(0, p, f"k{i}")
        for i, p in enumerate(pages[:3]):                      # A keeps page 3
            pool.release(0, p, (1, -i))
        for t in range(2, 50):
            pool.touch(0, pages[1 + t % 2], (t, 0))            # pages 1, 2: last used at 48, 49
        assert len(pool.cached_heap[0]) == (3 + 48 if slack else 3)   # rebuilt every 4 touches
        check(pool)
        taken = [pool.allocate(0, "B") for _ in range(8)]
        runs.append((taken, [pool.lookup(0, f"k{i}") for i in range(4)]))
    # B fills a large page of its own, then evicts small pages oldest first
    assert runs[0] == runs[1] == ([4, 5, 6, 7, 0, 1, 2, None], [None, None, None, 3])


def test_reclaimable_count_and_cache_generation_follow_every_change():
    pool = make(num_large=4, allocator="static", share=(2, 1, 1))
    assert [pool.num_reclaimable_large(g) for g in range(3)] == [2, 1, 1]
    a, b = pool.allocate(0, "A"), pool.allocate(0, "A")
    gen = pool.generation
    assert pool.set_key(0, a, "x") and pool.generation == gen + 1
    assert not pool.set_key(0, pool.allocate(0, "B"), "x") and pool.generation == gen + 1
    pool.release(0, a, (1, 0))
    assert pool.num_reclaimable_large(0) == 0          # A's page still holds b; B's is in use
    pool.release(0, b, (1, 0))
    assert pool.num_reclaimable_large(0) == 1 and pool.num_reclaimable_large() == 3
    pool.evict_all()
    assert pool.generation == gen + 2 and pool.num_reclaimable_large(0) == 1
    check(pool)


def test_a_full_large_page_keeps_no_free_slot_list():
    pool = make()
    for _ in range(4):
        pool.allocate(0, "A")
    p = pool.allocate(2, "A")                   # group 2: one small page per large page
    assert pool.free_slots == {} and p == 1
    pool.release(2, p, (0, 0))
    assert pool.free_slots == {} and pool.num_free_large() == 2
    check(pool)
