"""Compaction: a group that finds no page gets a large page another group
empties by moving its small pages; exact moves, page tables and copies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import FULL, MAMBA, manager_state, tiny_plan
from jenga.memory.compact import compact
from jenga.memory.manager import MemoryManager
from jenga.memory.pool import PagePool
from jenga.memory.rules import AllocatorRules
from jenga.memory.step_copies import check_phase

# full-attention page 32 bytes, Mamba state 128 bytes: 4 full pages to a large page
KINDS = [(FULL, 1, 4), (MAMBA, 4, 1)]


def two_requests(caching=False):
    """r0 and r1 (17 tokens each, 3-token prompts: no state checkpoint) in a
    6-large-page pool: each fills a full-attention large page (0, 3) and
    strands 3 free slots in a second one (1, 4); states in 2 and 5."""
    m = MemoryManager(tiny_plan(KINDS, 6), enable_prefix_caching=caching, mamba_interval=64)
    m.tick()
    for rid in ("r0", "r1"):
        m.add(rid, list(range(17)) if rid == "r0" else list(range(100, 117)), 3)
        assert m.allocate(rid, 0, 17) is not None
        m.commit(rid, 17)
        m.check_invariants()
    assert m.page_tables("r0") == ((0, 1, 2, 3, 4), (2,))
    assert m.page_tables("r1") == ((12, 13, 14, 15, 16), (5,))
    assert m.pool.num_free_large() == 0
    return m


def test_state_page_gets_a_large_page_emptied_by_moving_a_full_page():
    m = two_requests()
    m.tick()
    m.add("r2", [7, 8, 9], 3)
    # 6 free full-attention slots, 3 in each of large pages 1 and 4: the
    # lower one is emptied, r0's page 4 moving into large page 4's slot 17
    assert m.allocate("r2", 0, 3) is not None
    m.check_invariants()
    assert m.take_moves() == [(0, 4, 17)]
    assert m.take_moves() == []
    assert m.page_tables("r0") == ((0, 1, 2, 3, 17), (2,))
    assert m.page_tables("r1") == ((12, 13, 14, 15, 16), (5,))
    assert m.page_tables("r2") == ((18,), (1,))
    for rid in ("r0", "r1", "r2"):
        m.remove(rid)
        m.check_invariants()
    assert m.pool.num_free_large() == 6


def test_admission_counts_the_large_pages_compaction_can_empty():
    m = two_requests()
    assert m.has_room_for(3, 0)          # 6 spare slots: one large page
    m.rules = replace(m.rules, compaction=False)
    assert not m.has_room_for(3, 0)


def test_without_compaction_the_same_allocation_fails():
    m = two_requests()
    m.rules = replace(m.rules, compaction=False)
    m.tick()
    m.add("r2", [7, 8, 9], 3)
    assert m.allocate("r2", 0, 3) is None
    assert m.take_moves() == []
    m.check_invariants()


def test_pages_taken_this_step_do_not_move_and_the_failure_changes_nothing():
    m = two_requests()   # no tick: r0's and r1's pages were taken in this step
    m.add("r2", [7, 8, 9], 3)
    before = manager_state(m)
    # the count passes (3 + 3 large pages), the full page is taken (slot 7),
    # the state finds no page and compaction none: the slot is given back
    assert m.allocate("r2", 0, 3) is None
    assert manager_state(m) == before
    assert m.take_moves() == [] and m.page_tables("r0") == ((0, 1, 2, 3, 4), (2,))
    m.check_invariants()
    m.tick()   # the next step the same allocation compacts, as if it had not failed
    assert m.allocate("r2", 0, 3) is not None
    assert m.take_moves() == [(0, 4, 17)] and m.page_tables("r2") == ((18,), (1,))


def test_a_request_the_pool_cannot_hold_is_refused_before_any_eviction():
    m = two_requests(caching=True)
    m.tick()
    m.remove("r1")   # its 4 complete full pages stay cached: large page 3
    assert sorted(m.pool.cache_map[0].values()) == [0, 1, 2, 3, 12, 13, 14, 15]
    m.add("r2", list(range(200, 248)), 48)
    before = manager_state(m)
    # 12 full pages + 1 state: 17 full pages in 5 large pages and 2 states
    # in 2 even with every cached page evicted, and the pool has 6: nothing
    # is evicted, taken or moved
    assert m.allocate("r2", 0, 48) is None
    assert manager_state(m) == before and m.pool.evictions == [0, 0]
    # 11 full pages fit (large pages 5 and 4, then r0's free slots 5-7); the
    # state evicts r1's cached large page 3
    assert m.allocate("r2", 0, 44) is not None
    assert m.page_tables("r2") == ((20, 21, 22, 23, 16, 17, 18, 19, 5, 6, 7), (3,))
    assert m.pool.evictions == [4, 0] and sorted(m.pool.cache_map[0].values()) == [0, 1, 2, 3]
    m.check_invariants()


def test_a_copy_phase_that_writes_what_it_reads_is_caught_in_bytes():
    plan = tiny_plan(KINDS, 4)   # full pages 32 B (4 per large page), states 128 B
    check_phase(plan, [(0, 4), (0, 5)], [(0, 8), (0, 9)], "moves")      # reads and writes apart
    check_phase(plan, [(0, 4), (0, 4)], [(1, 2)], "copies")            # two reads of one page
    with pytest.raises(AssertionError, match="large page 1"):
        check_phase(plan, [(0, 4)], [(0, 1), (0, 4)], "moves")         # page 4 read and written
    with pytest.raises(AssertionError, match="large page 1"):
        check_phase(plan, [(0, 6)], [(1, 1)], "copies")                # a state over a full page's bytes
    with pytest.raises(AssertionError, match="large page 2"):
        check_phase(plan, [], [(1, 2), (1, 2)], "zeros")               # one page written twice


def test_a_cached_page_moves_with_its_key_fullest_destination_first():
    pool = PagePool(tiny_plan(KINDS, 3), AllocatorRules(compaction=True))
    pool.now = 1
    pages = {o: [pool.allocate(0, o) for _ in range(n)] for o, n in (("x", 2), ("y", 2), ("z", 3))}
    assert pages == {"x": [0, 1], "y": [4, 5], "z": [8, 9, 10]}
    pool.set_key(0, 0, "k0")
    pool.release(0, 0, (1, 0))   # evictable, beside x's page 1 in use
    pool.now = 2
    # 5 free slots: large pages 0 and 1 have 2 each, the lower one empties;
    # its pages fill large page 2's last slot, then one of large page 1's
    assert compact(pool, 1) == [(0, 0, 11), (0, 1, 6)]
    assert pool.lookup(0, "k0") == 11 and pool.is_evictable(0, 11)
    assert pool.ref[0][6] == 1 and pool.large_group[0] is None
    assert pool.num_free_large() == 1
    pool.check_invariants([{4: 1, 5: 1, 6: 1, 8: 1, 9: 1, 10: 1}, {}])
    assert compact(pool, 1) == []    # 2 free slots left: not a large page's worth


def test_an_optional_checkpoint_gets_its_page_by_compaction_after_the_required_ones():
    m = MemoryManager(tiny_plan(KINDS, 9), enable_prefix_caching=False, mamba_interval=64)
    m.tick()
    for k, rid in enumerate(("r0", "r1", "r3")):   # full pages in 0+1, 3+4, 6+7; states 2, 5, 8
        m.add(rid, list(range(100 * k, 100 * k + 17)), 3)
        assert m.allocate(rid, 0, 17) is not None
        m.commit(rid, 17)
    m.tick()
    m.add("r2", [7, 8, 9, 10], 4)   # its prompt end (4) gets a state checkpoint
    act = m.allocate("r2", 0, 4)
    m.check_invariants()
    # the state takes large page 1 (r0's page 4 moved to 17); the checkpoint,
    # which found no page inline, then takes large page 7 (r3's page 28 to 19)
    assert m.take_moves() == [(0, 4, 17), (0, 28, 19)]
    assert act.saves == ((1, 4, 7),) and act.zeros == ((1, 1),)
    assert m.page_tables("r2") == ((18,), (1,))
    assert m.page_tables("r0")[0][-1] == 17 and m.page_tables("r3")[0][-1] == 19


def test_move_refuses_a_free_source_or_a_taken_destination():
    pool = PagePool(tiny_plan(KINDS, 2), AllocatorRules(compaction=True))
    a, b = pool.allocate(0, "x"), pool.allocate(0, "x")
    assert (a, b) == (0, 1)
    with pytest.raises(ValueError, match="cannot move page 2 onto page 3"):
        pool.move(0, 2, 3)   # 2 is free
    with pytest.raises(ValueError, match="cannot move page 0 onto page 1"):
        pool.move(0, 0, 1)   # 1 is in use
    with pytest.raises(ValueError, match="cannot move page 0 onto page 4"):
        pool.move(0, 0, 4)   # large page 1 is not the group's
    pool.move(0, 0, 3)
    assert pool.ref[0][3] == 1 and pool.ref[0][0] == 0 and pool.num_free_slots(0) == 2
    pool.check_invariants([{1: 1, 3: 1}, {}])
