"""A request whose prompt opens like one still prefilling waits for that
prefill and then hits its pages instead of computing them twice."""

from __future__ import annotations

import pytest

from helpers import FULL, tiny_plan
from jenga.memory.manager import MemoryManager
from jenga.sched.config import SchedulerConfig
from jenga.sched.params import SamplingParams
from jenga.sched.request import Request
from jenga.sched.scheduler import Scheduler
from jenga.sched.step import StepResult

SHARED = list(range(100, 112))


def make(**cfg):
    m = MemoryManager(tiny_plan([(FULL, 1, 4)], 32))
    return Scheduler(SchedulerConfig(max_num_batched_tokens=64, **cfg), m, max_model_len=64)


def req(rid, tail):
    return Request(rid, SHARED + tail, SamplingParams(max_tokens=2, ignore_eos=True))


def step(s):
    plan = s.schedule()
    s.update(plan, StepResult({q.req_id: (7,) for q in plan.seqs if q.sample}))
    s.manager.check_invariants()
    return [(q.req_id, q.start, q.num_tokens) for q in plan.seqs]


def test_second_request_waits_one_step_then_hits_the_shared_pages():
    s = make(shared_prefill_wait=8)
    s.add_request(req("a", [1, 2, 3]))
    s.add_request(req("b", [4, 5]))
    s.add_request(Request("c", list(range(500, 510)), SamplingParams(max_tokens=2, ignore_eos=True)))
    # b opens like a, which is prefilling: admission stops at b for a step
    assert step(s) == [("a", 0, 15)]
    assert [r.req_id for r in s.waiting] == ["b", "c"]
    assert step(s) == [("a", 15, 1), ("b", 12, 2), ("c", 0, 10)]    # b hit the 12 shared tokens
    assert s.stats.hit_tokens == 12


def test_without_the_wait_both_compute_the_shared_tokens():
    s = make(shared_prefill_wait=0)
    s.add_request(req("a", [1, 2, 3]))
    s.add_request(req("b", [4, 5]))
    assert step(s) == [("a", 0, 15), ("b", 0, 14)]
    assert s.stats.hit_tokens == 0


def test_shared_prefill_wait_is_validated():
    with pytest.raises(ValueError, match="shared_prefill_wait"):
        SchedulerConfig(shared_prefill_wait=-1)


def test_common_prefix_is_exact():
    from jenga.sched.prefill_wait import common_prefix

    a = list(range(1000))
    assert common_prefix(a, a) == 1000 and common_prefix(a, a[:10]) == 10
    assert common_prefix(a, a[:637] + [-1] + a[638:]) == 637
    assert common_prefix([], a) == 0 and common_prefix([5], [6]) == 0


def test_an_already_cached_short_prefix_does_not_serialise_admission():
    s = make(shared_prefill_wait=8)
    s.add_request(req("a", [1, 2, 3]))
    step(s), step(s), step(s)                         # a done: the 12 shared tokens are cached
    for rid in "bcd":
        s.add_request(req(rid, [ord(rid)] * 8))
    # each shares only the cached 12 tokens with the others: nobody waits
    assert step(s) == [("b", 12, 8), ("c", 12, 8), ("d", 12, 8)]


def test_no_wait_when_the_manager_cannot_serve_the_shared_prefix():
    from helpers import MAMBA

    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 32, allocator="max-page"))
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=64, shared_prefill_wait=8), m, max_model_len=64)
    s.add_request(req("a", [1, 2, 3]))
    s.add_request(req("b", [4, 5]))
    assert step(s) == [("a", 0, 15), ("b", 0, 14)]      # max-page caches no Mamba state: waiting gains nothing


def hybrid(**cfg):
    from helpers import MAMBA

    # 4-token attention pages, one 32-byte state per Mamba page, no regular
    # checkpoint inside these prompts (interval 64)
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 32), mamba_interval=64)
    return Scheduler(SchedulerConfig(**{"max_num_batched_tokens": 64, **cfg}), m, max_model_len=64)


def saves(s, plan):
    return [(q.req_id, tuple(q.state_saves)) for q in plan.seqs if q.state_saves]


def test_the_second_request_of_a_new_shared_prompt_hits_on_a_mamba_hybrid():
    s = hybrid(shared_prefill_wait=8)
    s.add_request(req("a", [1, 2, 3, 4, 5, 6]))
    s.add_request(req("b", [4, 5]))
    assert s.manager.reqs["a"].shared == s.manager.reqs["b"].shared == (12,)
    plan = s.schedule()
    # one small page per large page here: a takes attention pages 0-4 and
    # its running state 5, and saves the state after the shared 12 tokens
    # (page 6) besides its prompt end (16, page 7); b waits for it
    assert [(q.req_id, q.start, q.num_tokens) for q in plan.seqs] == [("a", 0, 18)]
    assert saves(s, plan) == [("a", ((1, 12, 6), (1, 16, 7)))]
    s.update(plan, StepResult({"a": (7,)}))
    s.manager.check_invariants()
    assert step(s) == [("a", 18, 1), ("b", 12, 2)]     # b hits the 12 shared tokens in both groups
    assert s.stats.hit_tokens == 12


def test_before_branch_hints_the_second_request_missed(monkeypatch):
    # the same trace with the hint switched off: b's lookup sees the prefix
    # only in the attention group, so it computes it again (and would save
    # the state for a third request)
    monkeypatch.setattr(MemoryManager, "share_prefix", lambda self, rid, n: None)
    s = hybrid(shared_prefill_wait=8)
    s.add_request(req("a", [1, 2, 3, 4, 5, 6]))
    s.add_request(req("b", [4, 5]))
    assert step(s) == [("a", 0, 18)]
    assert step(s) == [("a", 18, 1), ("b", 0, 14)]
    assert s.stats.hit_tokens == 0


def test_a_running_prefill_is_told_of_a_new_arrival_sharing_its_prefix():
    s = hybrid(shared_prefill_wait=8, max_num_batched_tokens=8)
    s.add_request(req("a", [1, 2, 3, 4, 5, 6]))
    assert step(s) == [("a", 0, 8)]                     # a's first chunk, nothing shared yet
    s.add_request(req("b", [4, 5]))                     # arrives while a is prefilling
    assert s.manager.reqs["a"].shared == (12,)
    plan = s.schedule()
    assert [(q.req_id, q.start, q.num_tokens) for q in plan.seqs] == [("a", 8, 8)]
    # pages: attention 0-1 and state 2 in step 1, attention 3-4 and the
    # state after 12 tokens (page 5) and after 16, the prompt end (page 6)
    assert saves(s, plan) == [("a", ((1, 12, 5), (1, 16, 6)))]
    s.update(plan, StepResult({}))
    assert step(s) == [("a", 16, 2), ("b", 12, 2)]
    s.manager.check_invariants()


def test_shared_prefix_index_forgets_finished_requests():
    s = hybrid(shared_prefill_wait=0)
    s.add_request(req("a", [1, 2, 3, 4, 5, 6]))
    assert len(s._shared.by_key) == 1
    for _ in range(4):
        step(s)
    assert not s.has_unfinished() and s._shared.by_key == {}
