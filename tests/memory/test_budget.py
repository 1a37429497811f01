"""Token-budget layers (PyramidKV-style): exact pages kept, chunk pages held
for their step only, no prefix hits, and the need TrueNeed counts."""

from __future__ import annotations

import pytest

from helpers import BUDGET8, FULL, tiny_plan
from jenga.memory.footprint import TrueNeed
from jenga.memory.manager import MemoryManager
from jenga.memory.planner import build_plan
from jenga.memory.spec import LayerSpec, token_budget


def test_keeps_budget_pages_and_holds_a_chunk_past_it_for_its_step():
    m = MemoryManager(tiny_plan([(BUDGET8, 1, 4)], 16))
    tokens = list(range(20))
    m.add("a", tokens, 20)
    m.tick()
    assert m.allocate("a", 0, 12) is not None
    # keeps 8 tokens (pages 0, 1); the 12-token chunk is written first: page 2 too
    assert m.page_tables("a") == ((0, 1),) and m.reqs["a"].pending[0] == [(2, None, 0)]
    m.check_invariants()
    m.commit("a", 12)
    assert m.reqs["a"].pending[0] == [] and m.pool.num_free_large() == 14
    m.tick()
    assert m.allocate("a", 12, 20) is not None   # 8 kept + 8 new: two pages for the step
    assert [p for p, _, _ in m.reqs["a"].pending[0]] == [2, 3]
    m.commit("a", 20)
    m.check_invariants()
    tokens.append(5)
    m.tick()
    before = m.pool.num_free_large()
    m.allocate("a", 20, 21)   # a decode at the budget overwrites an evicted token's slot
    m.commit("a", 21)
    assert m.page_tables("a") == ((0, 1),) and m.pool.num_free_large() == before == 14
    m.remove("a")
    m.check_invariants()
    assert m.pool.num_free_large() == 16


def test_serves_no_prefix_hit_and_the_model_serves_none():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (BUDGET8, 1, 4)], 16))
    m.add("a", list(range(12)), 12)
    m.tick()
    assert m.allocate("a", 0, 12) is not None
    m.commit("a", 12)
    m.remove("a")
    m.add("b", list(range(12)) + [99], 13)
    hit = m.lookup("b")
    assert hit.num_tokens == 0 and hit.per_group == (12, 0)
    assert m.hit_granularity() is None
    with pytest.raises(ValueError, match="budget layer serves no prefix hit"):
        m.policies[1].take_hit(m.reqs["b"], 4, m.pool, None)


def test_need_pages_and_peak():
    plan = tiny_plan([(BUDGET8, 1, 4)], 16)
    p = MemoryManager(plan).policies[0]
    assert [p.footprint_units(n, 0) for n in (3, 8, 20)] == [3, 8, 8]
    assert [p.footprint_pages(n, 0) for n in (3, 8, 20)] == [1, 2, 2]   # no page straddling a window start
    assert p.peak_pages(20, 0, 12) == 5 and p.peak_pages(6, 0, 12) == 2
    need = TrueNeed(plan)
    assert need.kept(20, 0) == (64,)                 # 8 tokens x 8 B
    assert need.step(12, 20, 0) == (128,)            # 8 kept + 8 written
    assert need.step(20, 21, 0) == (64,)             # a decode at the budget
    assert need.rounded(12, 20, 0, True) == (4 * 32,) and need.rounded(12, 20, 0, False) == (2 * 32,)


def test_max_page_stores_every_token_of_a_budget_layer():
    specs = [token_budget(256, 8, 128), LayerSpec("full", "bfloat16", 8, 128)]
    plan = build_plan(specs, 1 << 30, allocator="max-page")
    assert [g.kind for g in plan.groups] == ["full"] and len(plan.groups[0].layers) == 2
    jenga = build_plan(specs, 1 << 30)
    assert sorted(g.spec.describe() for g in jenga.groups) == ["budget(budget=256)", "full"]
