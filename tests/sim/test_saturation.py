"""The saturation bookkeeping: which refusals bind memory, and the pool's
state at that instant, on hand-built pools where every byte is known."""

import pytest

from helpers import FULL, MAMBA, tiny_plan
from jenga.memory.footprint import TrueNeed
from jenga.memory.spec import LayerSpec
from jenga.memory.manager import MemoryManager
from jenga.sim.saturation import PREEMPT, REFUSED, REFUSED_WITH_ROOM, PoolObserver, PoolSample, SaturationSummary

SLIDE4 = LayerSpec("sliding", "float32", 1, 1, window=4)


def manager(plan, caching=False):
    """A manager and the PoolObserver subscribed to it."""
    m = MemoryManager(plan, enable_prefix_caching=caching)
    return m, PoolObserver(m, TrueNeed(plan))


def test_need_counts_this_steps_scope_and_earlier_steps_kept_state():
    m, o = manager(tiny_plan([(SLIDE4, 1, 2), (FULL, 1, 2)], 20, base=2))
    m.add("a", list(range(12)), 12)
    o.begin_step()
    assert m.allocate("a", 0, 8) is not None
    assert o.need() == (8 * 8, 8 * 8)          # the step writes all 8 tokens
    assert o.rounded_need() == 4 * 16 + 4 * 16
    m.commit("a", 8)
    o.begin_step()
    assert o.need() == (4 * 8, 8 * 8)          # after it, the window is kept
    m.remove("a")
    assert o.need() == (0, 0) and o.sample is None


def test_failed_allocation_of_a_running_request_is_sampled_before_preemption():
    m, o = manager(tiny_plan([(FULL, 1, 2)], 5, base=2))     # 5 pages of 2 tokens, 16 B each
    m.add("a", list(range(12)), 12)
    m.add("b", list(range(4)), 4)
    o.begin_step()
    m.allocate("a", 0, 10)
    m.commit("a", 10)
    o.begin_step()
    assert m.allocate("a", 10, 11) is None                  # needs a sixth page
    first = o.sample
    assert first == PoolSample(PREEMPT, (80,), 80, 80, 80, 80, 0)
    assert first.utilisation == first.counted_utilisation == 1.0 and first.memory_bound
    assert m.allocate("b", 0, 4) is None and o.sample is first  # the step's first refusal stays
    m.release("a")                                           # the scheduler preempts a
    o.begin_step()
    assert o.sample is None and o.need() == (0,)


def test_refusal_is_memory_bound_only_when_the_free_bytes_are_short():
    m, o = manager(tiny_plan([(FULL, 1, 2)], 5, base=2))
    m.add("a", list(range(8)), 8)
    m.add("b", list(range(4)), 4)
    o.begin_step()
    m.allocate("a", 0, 8)                                   # 4 of 5 pages
    m.commit("a", 8)
    o.begin_step()
    assert m.allocate("b", 0, 4) is None                    # asks 32 B with 16 B free
    assert o.sample == PoolSample(REFUSED, (64,), 64, 64, 64, 80, 32)
    o.begin_step()
    assert not m.has_room_for(4, 0)
    assert o.sample.kind == REFUSED and o.sample.asked_bytes == 32


def test_refusal_with_room_when_free_bytes_sit_in_another_groups_large_pages():
    # full: 1-token pages of 8 B, 4 per 32-B large page; mamba: one 32-B
    # state per large page.  a and c each fill one full large page and a
    # quarter of another: 6 free full slots (48 B) but no free large page
    plan = tiny_plan([(FULL, 1, 1), (MAMBA, 1, 1)], 6, base=1)
    m, o = manager(plan)
    for rid in ("a", "c"):
        m.add(rid, list(range(5)), 5)
        o.begin_step()
        assert m.allocate(rid, 0, 5) is not None
        m.commit(rid, 5)                                    # drops the prompt-end checkpoint page
    m.add("b", [1], 1)
    o.begin_step()
    assert m.allocate("b", 0, 1) is None                    # asks 8 + 32 B
    s = o.sample
    assert (s.kind, s.asked_bytes, s.pool_bytes - s.used_bytes) == (REFUSED_WITH_ROOM, 40, 48)
    assert not s.memory_bound


def test_summary_means_and_counts():
    full = PoolSample(PREEMPT, (90,), 95, 98, 100, 100, 0)
    short = PoolSample(REFUSED, (70,), 70, 80, 75, 100, 30)
    room = PoolSample(REFUSED_WITH_ROOM, (50,), 50, 60, 55, 100, 10)
    s = SaturationSummary.of([full, short, room])
    assert (s.bound_steps, s.preempt_steps, s.refused_with_room) == (2, 1, 1)
    assert s.util_bound == pytest.approx(0.8) and s.util_preempt == pytest.approx(0.9)
    assert s.util_with_room == pytest.approx(0.5)
    assert (s.counted, s.used, s.rounded) == (pytest.approx(0.89), pytest.approx(0.875), pytest.approx(0.825))
    assert (s.refused_free, s.refused_asked) == (pytest.approx(0.25), pytest.approx(0.3))
    empty = SaturationSummary.of([])
    assert empty.util_bound is None and empty.bound_steps == 0


def test_admission_check_asks_for_the_prefill_peak():
    # sliding(4) in 2-token pages of 16 B, 5 pages, a holds 2: 4 tokens fit,
    # but 10 tokens 4 at a time hold 4 pages at the chunk [4, 8)
    m, o = manager(tiny_plan([(SLIDE4, 1, 2)], 5, base=2))
    m.add("a", list(range(4)), 4)
    o.begin_step()
    m.allocate("a", 0, 4)
    assert m.has_room_for(4, 0, 1) and o.sample is None
    assert not m.has_room_for(10, 0, 4)
    assert o.sample == PoolSample(REFUSED, (32,), 32, 32, 32, 80, 4 * 16)
    o.begin_step()
    assert not m.has_room_for(10, 0)            # all at once: every page
    assert o.sample.asked_bytes == 5 * 16


def test_state_shared_by_a_prefix_hit_counts_once():
    plan = tiny_plan([(FULL, 1, 2)], 20, base=2)             # 8 B a token, 2-token blocks
    m, o = manager(plan, caching=True)
    m.add("a", list(range(8)), 8)
    m.add("b", list(range(6)) + [50, 51], 8)
    o.begin_step()
    m.allocate("a", 0, 8)
    m.commit("a", 8)
    o.begin_step()
    hit = m.lookup("b").num_tokens
    assert hit == 6 and m.allocate("b", 6, 8, hit_tokens=6) is not None
    # a's 8 tokens, and b's own 2: the 6 tokens of the hit are held once
    assert o.need() == ((8 + 2) * 8,)
    m.release("a")
    assert o.need() == (8 * 8,)                              # b alone needs its whole prompt


def test_a_failed_allocation_replaces_an_earlier_refusal_with_room():
    m, o = manager(tiny_plan([(FULL, 1, 2)], 5, base=2))     # 5 pages of 16 B
    m.add("a", list(range(12)), 12)
    o.begin_step()
    m.allocate("a", 0, 6)
    m.commit("a", 6)
    o.begin_step()
    # 4 tokens are 2 pages and 2 are free, but the check keeps a page of margin
    assert not m.has_room_for(4, 0) and o.sample.kind == REFUSED_WITH_ROOM
    assert m.allocate("a", 6, 12) is None and o.sample.kind == PREEMPT
    assert not m.has_room_for(4, 0) and o.sample.kind == PREEMPT
