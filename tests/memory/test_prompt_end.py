"""A prefix hit at the end of a prompt (a shared document, a few-shot
prefix) must survive in every group as long as the full-attention pages of
that prompt do: sliding pages keep the scope of the last page-aligned
position, and the pages a prompt-end hit needs count as used until the
request releases its pages."""

from __future__ import annotations

from helpers import FULL, MAMBA, SLIDE8, tiny_plan
from jenga.memory.manager import MemoryManager

NO = -1


def _prefill(m, rid, tokens):
    m.add(rid, tokens, len(tokens))
    hit = m.lookup(rid)
    assert m.allocate(rid, hit.num_tokens, len(tokens), hit_tokens=hit.num_tokens) is not None
    m.commit(rid, len(tokens))
    m.check_invariants()
    m.tick()
    return hit


def test_sliding_keeps_the_page_a_hit_at_the_aligned_prompt_end_needs():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 14))
    doc = list(range(23))
    _prefill(m, "a", doc)
    # the next token (23) needs 16..22 only, but a hit at 20 (the prompt end
    # rounded down to a page) needs 13..19: sliding page 3 (12..15) stays
    assert m.page_tables("a")[1][:4] == (NO, NO, NO, m.page_tables("a")[1][3])
    assert m.page_tables("a")[1][3] != NO
    hit = _prefill(m, "b", doc[:20] + [77, 78])
    assert hit.num_tokens == 20 and hit.per_group == (20, 20)
    m.check_invariants()


def test_released_prompt_end_window_is_stamped_with_the_prompt_at_release():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 14))
    tokens = list(range(20))
    _prefill(m, "a", tokens)
    sliding = m.page_tables("a")[1]
    assert sliding[:3] == (NO, NO, NO) and NO not in sliding[3:5]
    window = sliding[3:5]                         # pages 3, 4: a hit at 20 needs 13..19
    full = m.page_tables("a")[0]
    for n in range(20, 28):                       # decode 8 tokens: the window slides past 20
        tokens.append(100 + n)
        assert m.allocate("a", n, n + 1) is not None
        m.commit("a", n + 1)
        m.check_invariants()
        m.tick()
    assert m.page_tables("a")[1][3:5] == (NO, NO)
    decode_stamps = [m.pool.stamp[1][p] for p in window]
    m.remove("a")
    m.check_invariants()
    # the prompt-end window now carries the same stamps as the same tokens
    # of the full-attention group: aligned eviction treats them as one
    assert [m.pool.stamp[1][p] for p in window] == [m.pool.stamp[0][full[i]] for i in (3, 4)]
    assert [m.pool.stamp[1][p] for p in window] != decode_stamps
    hit = _prefill(m, "b", list(range(20)) + [5])
    assert hit.num_tokens == 20 and hit.per_group == (20, 20)


def test_touch_restamps_only_evictable_pages():
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 4))
    _prefill(m, "a", list(range(8)))
    page = m.page_tables("a")[0][0]
    assert not m.pool.touch(0, page, (99, 0))     # in use: nothing changes
    m.remove("a")
    before = m.pool.stamp[0][page]
    assert m.pool.touch(0, page, (99, 0)) and m.pool.stamp[0][page] == (99, 0) != before
    m.check_invariants()


def test_a_request_holds_the_window_of_the_prefix_it_hit_until_it_ends():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 14))
    _prefill(m, "a", list(range(20)))
    m.remove("a")
    hit = _prefill(m, "b", list(range(20)) + list(range(50, 62)))    # 32 tokens: the window moved on
    assert hit.num_tokens == 20
    sliding = m.page_tables("b")[1]
    # pages 3, 4 (the window before 20) are shared with the next hitter and
    # stay; page 5 (20..23) left scope like any other
    assert sliding[3] != NO and sliding[4] != NO and sliding[5] == NO
    m.remove("b")
    m.check_invariants()
    assert _prefill(m, "c", list(range(20)) + [9]).per_group == (20, 20)


def test_a_branch_point_other_groups_still_hold_gets_its_window_kept():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 20))
    shared = list(range(20))
    _prefill(m, "a", shared + list(range(40, 52)))
    m.remove("a")
    _prefill(m, "x", list(range(900, 916)))        # pressure: the oldest pages go, a's early sliding ones
    m.remove("x")
    m.add("b", shared + list(range(60, 72)), 32)
    hit = m.lookup("b")
    # the full group still holds the shared 20 tokens, the sliding group lost
    # the window before 20: b's prompt shares a prefix that ends at 20
    assert hit.per_group[0] == 20 and hit.num_tokens < 20
    assert m.allocate("b", hit.num_tokens, 32, hit_tokens=hit.num_tokens) is not None
    m.commit("b", 32)
    m.check_invariants()
    assert NO not in m.page_tables("b")[1][3:5]      # the window before 20 stays while b runs
    m.remove("b")
    assert _prefill(m, "c", shared + [5]).per_group == (20, 20)


def test_hit_granularity_is_where_every_group_can_end_a_hit():
    from helpers import MAMBA

    assert MemoryManager(tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], 8)).hit_granularity() == 4
    assert MemoryManager(tiny_plan([(FULL, 1, 4)], 8), enable_prefix_caching=False).hit_granularity() is None
    hybrid = tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 8)
    assert MemoryManager(hybrid, mamba_interval=12).hit_granularity() == 12        # regular checkpoints
    assert MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 8, allocator="max-page"),
                         mamba_interval=12).hit_granularity() is None             # v0 caches no states


def test_release_restamps_the_prompt_end_and_latest_checkpoints():
    # a preempted or finished request's own restart (or the next hit on its
    # prompt) starts from these states: they must not keep the stamps of
    # the steps that saved them, older than everything else it released
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 32), mamba_interval=8)
    tokens = list(range(10))
    m.add("a", tokens, 10)
    m.tick()
    assert m.allocate("a", 0, 10) is not None     # checkpoint at 8 (interval and prompt end)
    m.commit("a", 10)
    tokens += range(10, 18)
    for pos in range(10, 17):                     # decode to 17 computed: checkpoint at 16
        m.tick()
        assert m.allocate("a", pos, pos + 1) is not None
        m.commit("a", pos + 1)
    r = m.reqs["a"]
    pages = {c: m.pool.lookup(1, r.key_at(c)) for c in (8, 16)}
    assert m.pool.stamp[1][pages[8]] == (1, -8) and m.pool.stamp[1][pages[16]] == (7, -16)
    m.tick()
    m.release("a")
    m.check_invariants()
    assert m.pool.stamp[1][pages[8]] == (m.clock, -8) and m.pool.stamp[1][pages[16]] == (m.clock, -16)
