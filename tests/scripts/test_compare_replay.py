"""The replay driver of scripts/compare_vllm_manager.py, without vLLM: a
token-counting fake manager checks the loop step by step, and Jenga's
MemoryManager checks the adapter (prefix hits, bytes in use)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from compare_replay import JengaSide, TraceReq, make_trace, run  # noqa: E402
from helpers import FULL, SLIDE8, tiny_plan  # noqa: E402


class CountingSide:
    """A manager that only counts token slots: a request holds one slot per
    token it has made room for, up to `cap` slots in all; no prefix cache."""

    name = "counting"
    hash_seconds = None

    def __init__(self, cap: int) -> None:
        self.cap, self.pool_bytes, self.held, self.log = cap, cap, {}, []

    def new_step(self) -> None:
        self.log.append("step")

    def add(self, r) -> None:
        self.held[r.trace.req_id] = 0

    def lookup(self, r) -> int:
        return 0

    def clip(self, r, start, n, hit) -> int:
        return n

    def _grow(self, r, end: int) -> bool:
        need = max(0, end - self.held[r.trace.req_id])
        if sum(self.held.values()) + need > self.cap:
            return False
        self.held[r.trace.req_id] += need
        return True

    def admit(self, r, hit, n, others_running) -> bool:
        return self._grow(r, hit + n)

    def allocate(self, r, n) -> bool:
        return self._grow(r, r.computed + n)

    def commit(self, r) -> None:
        pass

    def append(self, r, tok) -> None:
        self.log.append(f"{r.trace.req_id}+{tok}")

    def preempt(self, r) -> None:
        self.held[r.trace.req_id] = 0
        self.log.append(f"preempt {r.trace.req_id}")

    def finish(self, r) -> None:
        del self.held[r.trace.req_id]
        self.log.append(f"finish {r.trace.req_id}")

    def used_bytes(self) -> int:
        return sum(self.held.values())


def two_requests() -> list[TraceReq]:
    return [TraceReq("a", (1, 2, 3, 4, 5, 6), (70, 71), 0, -1), TraceReq("b", (8, 9), (90, 91), 0, -1)]


def test_driver_steps_by_hand_without_pressure():
    res = run(CountingSide(cap=100), two_requests(), token_budget=4, max_num_seqs=8)
    # step 0: a prefills 4 of 6; step 1: a's last 2 (samples 70) + b's 2 (samples 90);
    # step 2: both decode one token and finish.
    assert (res.steps, res.busy_steps, res.sum_batch, res.sum_tokens) == (3, 3, 5, 10)
    assert res.computed_tokens == 10 and res.preemptions == 0 and res.fail_used == []
    assert res.prompt_tokens == 8 and res.hit_tokens == 0
    assert res.peak_used == 10   # a holds 7 slots, b 3, after step 2's allocations
    # allocate: 2 admissions + 3 running growths; commit: 5 step commits + 4 appends
    assert res.calls == {"add": 2, "step": 3, "allocate": 5, "lookup": 2, "commit": 9, "free": 2}


def test_driver_preempts_newest_and_recomputes():
    side = CountingSide(cap=8)
    res = run(side, two_requests(), token_budget=4, max_num_seqs=8)
    # step 2: a needs slot 7 with 8 held -> b (newest) is preempted, a decodes
    # and finishes; no admission that step; step 3: b recomputes its 2 prompt
    # tokens + its first output (3 tokens) and samples its last token.
    assert side.log == ["step", "step", "a+70", "b+90", "step", "preempt b", "a+71", "finish a",
                        "step", "b+91", "finish b"]
    assert (res.steps, res.preemptions, res.fail_used) == (4, 1, [8])
    assert res.computed_tokens == 4 + 4 + 1 + 3
    assert res.recompute_hit_tokens == 0


def test_driver_raises_when_a_request_cannot_fit_alone():
    with pytest.raises(RuntimeError, match="request a cannot fit"):
        run(CountingSide(cap=3), two_requests()[:1], token_budget=8, max_num_seqs=8)


def test_trace_is_seeded_and_shares_document_prefixes():
    t1 = make_trace(7, docs=2, questions=3, shorts=4, rate=1.0, doc_len=(40, 60), doc_out=5, short_out=9)
    assert t1 == make_trace(7, docs=2, questions=3, shorts=4, rate=1.0, doc_len=(40, 60),
                            doc_out=5, short_out=9)
    assert len(t1) == 10 and [r.req_id for r in t1] == [f"r{i}" for i in range(10)]
    assert sorted(r.doc for r in t1) == [-1] * 4 + [0] * 3 + [1] * 3
    assert all(len(r.output) == (5 if r.doc >= 0 else 9) for r in t1)
    assert [r.arrival for r in t1] == sorted(r.arrival for r in t1)
    for d in (0, 1):
        same = [r.prompt for r in t1 if r.doc == d]
        assert len({p[:40] for p in same}) == 1 and len(set(same)) == 3
        assert all(56 <= len(p) <= 188 for p in same)
    assert make_trace(8, 2, 3, 4, 1.0, (40, 60)) != t1


@pytest.mark.parametrize("kwargs", [dict(docs=0, questions=0, shorts=0, rate=1.0),
                                    dict(docs=1, questions=1, shorts=0, rate=0.0),
                                    dict(docs=-1, questions=1, shorts=1, rate=1.0)])
def test_trace_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_trace(0, **kwargs)


def test_jenga_side_hits_a_shared_document_prefix():
    doc = tuple(range(100, 132))   # 32 tokens = 8 pages of 4
    trace = [TraceReq("a", doc + (1, 2, 3), (7, 8), 0, 0), TraceReq("b", doc + (4, 5, 6), (9,), 5, 0)]
    plan = tiny_plan([(FULL, 2, 4), (SLIDE8, 2, 4)], num_large=64)
    side = JengaSide(plan)
    res = run(side, trace, token_budget=64, max_num_seqs=4)
    # a: 35-token prefill (step 0), one decode (step 1), done; b arrives at step 5
    # and hits the 8 complete document pages in both groups (question differs).
    assert (res.steps, res.busy_steps, res.hit_tokens, res.prompt_tokens) == (6, 3, 32, 70)
    assert res.computed_tokens == 35 + 1 + 3
    # Pages are 64 B (4 tokens x 8 B x 2 layers).  Step 0: a's prefill holds 9
    # pages per group; its commit releases sliding pages 0..5 and keeps page 6,
    # which a hit at 32 (the prompt end, page-aligned) needs.  Step 1: 9 full +
    # sliding 6, 7, 8 (its commit at 36 releases page 6).  Step 5: b holds 8
    # hit + 1 new full pages and sliding pages 6, 7 (hit) + 8 (new).
    assert res.peak_used == 18 * 64
    assert res.sum_used == (18 + 12 + 12) * 64
    side.mm.check_invariants()
    assert side.mm.reqs == {}


def test_need_meter_counts_a_shared_document_once():
    from compare_replay import NeedMeter

    plan = tiny_plan([(FULL, 1, 4), (SLIDE8, 1, 4)], num_large=64)      # 8 B per token and layer
    doc = TraceReq("a", tuple(range(40)), (1,), 0, 0, shared=32)
    other = TraceReq("b", tuple(range(36)), (1,), 0, 0, shared=32)
    meter = NeedMeter(plan)
    # full: the shared 32 tokens once + 8 + 4 own; sliding(8) keeps [33, 40) and [29, 36):
    # 7 + 4 own tokens past 32, and [29, 32) of the shared part once
    assert meter.bytes([(40, doc), (36, other)]) == (32 + 8 + 4) * 8 + (7 + 4 + 3) * 8
    lone = TraceReq("c", tuple(range(40)), (1,), 0, -1)
    assert meter.bytes([(40, lone)]) == 40 * 8 + 7 * 8


def test_jenga_side_admits_a_long_prompt_only_if_its_whole_prefill_fits():
    plan = tiny_plan([(FULL, 1, 4)], num_large=12)      # 48 tokens of 4-token pages
    trace = [TraceReq("a", tuple(range(8)), (1,) * 20, 0, -1), TraceReq("b", tuple(range(100, 140)), (2,), 1, -1)]
    from compare_replay import NeedMeter

    gated = run(JengaSide(plan, token_budget=8), trace, 8, 4, NeedMeter(plan))
    bare = run(JengaSide(plan, token_budget=8, scheduler_rules=False), trace, 8, 4, NeedMeter(plan))
    # b's 40-token prompt takes 5 chunks: with a running, its 10 pages do not fit beside a's,
    # so our scheduler's check holds it back until a is done; the bare driver admits it a
    # chunk at a time and preempts a when the pool runs out, recomputing its 8 tokens
    assert [(r.steps, r.preemptions, r.recomputed_tokens, r.computed_tokens) for r in (gated, bare)] == [
        (25, 0, 0, 67), (23, 1, 8, 75)]
    # memory binds while b waits (19 steps; a alone needs 0.375 of the pool on average then)
    assert (gated.bound_steps, gated.util_bound, bare.bound_steps) == (19, 0.375, 15)


def test_shared_system_trace_opens_every_prompt_alike():
    from compare_traces import chats_trace, long_unique_trace, shared_system_trace

    t = shared_system_trace(3, 6, rate=2.0, system_len=20, user_len=(4, 8), out=3)
    assert t == shared_system_trace(3, 6, rate=2.0, system_len=20, user_len=(4, 8), out=3)
    assert len({r.prompt[:20] for r in t}) == 1 and all(r.doc == 0 and r.shared == 20 for r in t)
    assert all(24 <= len(r.prompt) <= 28 and len(r.output) == 3 for r in t)
    chats = chats_trace(3, 50, rate=1.0, max_len=300)
    assert all(8 <= len(r.prompt) <= 300 and 2 <= len(r.output) <= 300 and r.doc == -1 for r in chats)
    assert all(10 <= len(r.prompt) <= 20 for r in long_unique_trace(3, 4, 1.0, prompt_len=(10, 20), out=2))
    with pytest.raises(ValueError):
        chats_trace(0, 0, 1.0)
