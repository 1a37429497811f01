"""Scheduler: continuous batching, chunked prefill, prefix hits at admission,
preemption under memory pressure, stop conditions and clear errors."""

from __future__ import annotations

import pytest

from helpers import FULL, MAMBA, SLIDE8, tiny_plan
from jenga.memory.manager import MemoryManager
from jenga.sched.config import SchedulerConfig
from jenga.sched.params import SamplingParams
from jenga.sched.request import FinishReason, Request
from jenga.sched.scheduler import QueueFull, Scheduler
from jenga.sched.step import StepResult


def make(num_large=32, budget=8, kinds=((FULL, 1, 4),), **cfg):
    m = MemoryManager(tiny_plan(list(kinds), num_large), mamba_interval=8,
                      enable_prefix_caching=cfg.get("enable_prefix_caching", True))
    return Scheduler(SchedulerConfig(max_num_batched_tokens=budget, **cfg), m, max_model_len=64)


def req(rid, n, max_tokens=3, prefix=(), **kw):
    return Request(rid, list(prefix) + [hash((rid, i)) % 1000 for i in range(n)],
                   SamplingParams(max_tokens=max_tokens, ignore_eos=True), **kw)


def drive(s, token=7, limit=200):
    """Run to completion; returns (plans, updates by request)."""
    plans, outs = [], {}
    for _ in range(limit):
        if not s.has_unfinished():
            break
        plan = s.schedule()
        s.manager.check_invariants()
        plans.append(plan)
        for u in s.update(plan, StepResult({q.req_id: (token,) for q in plan.seqs if q.sample})):
            outs.setdefault(u.req_id, []).append(u)
        s.manager.check_invariants()
    assert not s.has_unfinished()
    return plans, outs


def test_chunked_prefill_then_batched_decode():
    s = make(budget=8)
    s.add_request(req("a", 10))
    s.add_request(req("b", 3))
    plans, outs = drive(s)
    first = [(q.req_id, q.start, q.num_tokens, q.sample) for q in plans[0].seqs]
    second = [(q.req_id, q.start, q.num_tokens, q.sample) for q in plans[1].seqs]
    assert first == [("a", 0, 8, False)]
    assert second == [("a", 8, 2, True), ("b", 0, 3, True)]
    assert [q.num_tokens for q in plans[2].seqs] == [1, 1]       # both decode together
    assert [u.new_token_ids for u in outs["a"] if u.new_token_ids] == [(7,)] * 3
    assert outs["a"][-1].finish_reason is FinishReason.LENGTH


def test_prefix_hit_at_admission_skips_cached_tokens():
    s = make(budget=64)
    shared = list(range(100, 112))
    s.add_request(req("a", 3, prefix=shared))
    drive(s)
    s.add_request(req("b", 3, prefix=shared))
    plans, _ = drive(s)
    assert plans[0].seqs[0].start == 12 and s.stats.hit_tokens == 12
    assert s.stats.prompt_tokens == 30


def test_preemption_frees_and_recomputes_and_everything_finishes():
    s = make(num_large=6, budget=16, enable_prefix_caching=False)
    for i in range(3):
        s.add_request(req(f"r{i}", 6, max_tokens=6))
    _, outs = drive(s)
    assert s.stats.num_preemptions > 0
    assert all(len([t for u in outs[r] for t in u.new_token_ids]) == 6 for r in outs)
    assert s.manager.pool.num_free_large() == 6


def test_stop_token_and_eos_end_requests():
    s = make()
    r = req("a", 4, max_tokens=10)
    r.eos_token_id = 7
    s.add_request(r)
    _, outs = drive(s, token=7)
    assert outs["a"][-1].finish_reason is FinishReason.LENGTH      # ignore_eos
    s.add_request(Request("b", [1, 2], SamplingParams(max_tokens=10), eos_token_id=7))
    _, outs = drive(s, token=7)
    assert outs["b"][-1].finish_reason is FinishReason.STOP and outs["b"][-1].new_token_ids == (7,)


def test_abort_releases_pages_at_once():
    s = make()
    s.add_request(req("a", 10, max_tokens=20))
    s.update(s.schedule(), StepResult({}))
    assert s.manager.pool.num_free_large() < 32
    assert s.finish_request("a", FinishReason.ABORT)
    s.manager.reset_prefix_cache()
    assert s.manager.pool.num_free_large() == 32 and not s.has_unfinished()
    assert s.schedule().finished == ("a",)


def test_mamba_state_zeroed_then_checkpointed():
    s = make(kinds=((FULL, 1, 4), (MAMBA, 1, 1)), budget=64)
    s.add_request(req("a", 18))
    plan = s.schedule()
    assert plan.zeros == ((1, plan.seqs[0].page_tables[1][0]),)
    assert [x.position for x in plan.seqs[0].state_saves] == [8, 16]


def test_errors_are_clear():
    s = make(num_large=3, max_waiting=1)
    with pytest.raises(ValueError, match="context"):
        s.add_request(req("long", 64))
    with pytest.raises(ValueError, match="more KV memory"):
        s.add_request(req("big", 20, max_tokens=20))
    with pytest.raises(ValueError, match="at least one token"):
        Request("empty", [])
    s.add_request(req("a", 2))
    with pytest.raises(QueueFull):
        s.add_request(req("b", 2))
    with pytest.raises(ValueError, match="already in use"):
        s.add_request(req("a", 2))
    with pytest.raises(ValueError, match="max_num_seqs"):
        SchedulerConfig(max_num_seqs=0)


def test_long_prompt_waits_until_all_of_it_fits():
    s = make(num_large=10, budget=8, enable_prefix_caching=False)
    s.add_request(req("a", 8, max_tokens=12))          # 20 tokens: 5 pages
    s.update(s.schedule(), StepResult({"a": (7,)}))
    s.add_request(req("b", 30, max_tokens=2))          # 30-token prompt: 8 pages + 1, only 8 free
    plan = s.schedule()
    assert [q.req_id for q in plan.seqs] == ["a"] and s.stats.waiting_for_memory
    _, outs = drive(s)
    assert s.stats.num_preemptions == 0 and set(outs) == {"a", "b"}


def test_unmixed_batches_run_prefills_and_decodes_in_separate_steps():
    s = make(budget=64, mixed_batches=False)
    s.add_request(req("a", 5, max_tokens=4))
    p1 = s.schedule()
    s.update(p1, StepResult({"a": (7,)}))
    s.add_request(req("b", 6, max_tokens=4))
    p2 = s.schedule()                       # b's prefill alone: a's decode waits
    assert [(q.req_id, q.num_tokens) for q in p2.seqs] == [("b", 6)]
    s.update(p2, StepResult({"b": (7,)}))
    p3 = s.schedule()
    assert [(q.req_id, q.num_tokens) for q in p3.seqs] == [("a", 1), ("b", 1)]
