"""Speculative decoding in the scheduler and manager: draft tokens are
verified, rejected ones roll back (token pages and Mamba states alike), and
the output equals plain decoding."""

from __future__ import annotations

from helpers import FULL, MAMBA, SLIDE8, tiny_plan
from jenga.memory.manager import MemoryManager
from jenga.sched.config import SchedulerConfig
from jenga.sched.params import SamplingParams
from jenga.sched.request import Request
from jenga.sched.scheduler import Scheduler
from jenga.sched.step import StepResult


def target(pos: int) -> int:
    """The 'model': the greedy token following position pos."""
    return (pos * 31 + 7) % 50


def draft(pos: int) -> int:
    return target(pos) if pos % 3 else 49 - target(pos)   # wrong on every third position


def fake_runner(plan, k):
    """Verify drafts like a greedy runner and propose k new ones."""
    sampled, drafts, saves = {}, {}, []
    for q in plan.seqs:
        if not q.sample:
            continue
        base = q.end - q.num_spec - 1                     # position of the last real token
        out = []
        for i in range(q.num_spec + 1):
            tok = target(base + i)
            out.append(tok)
            if i < q.num_spec and q.token_ids[len(q.token_ids) - q.num_spec + i] != tok:
                break
        sampled[q.req_id] = tuple(out)
        nxt = base + len(out)
        drafts[q.req_id] = tuple(draft(nxt + j) for j in range(k))
        saves += [(q.req_id, s.position) for s in q.state_saves]
    return StepResult(sampled, draft_tokens=drafts), saves


def run(k: int, kinds):
    m = MemoryManager(tiny_plan(kinds, 64), mamba_interval=64, enable_prefix_caching=False)
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=64, num_speculative_tokens=k), m, max_model_len=200)
    for i, n in enumerate((5, 9)):
        s.add_request(Request(f"r{i}", list(range(n)), SamplingParams(max_tokens=20, ignore_eos=True)))
    outs, all_saves, steps = {}, [], 0
    while s.has_unfinished():
        plan = s.schedule()
        res, saves = fake_runner(plan, k)
        all_saves += saves
        for u in s.update(plan, res):
            outs.setdefault(u.req_id, []).extend(u.new_token_ids)
        m.check_invariants()
        steps += 1
    return outs, steps, s.stats, all_saves, m


def test_speculative_output_equals_plain_decoding_with_fewer_steps():
    kinds = [(FULL, 1, 4), (SLIDE8, 1, 4), (MAMBA, 1, 1)]
    plain, plain_steps, _, _, _ = run(0, kinds)
    spec, spec_steps, stats, saves, m = run(3, kinds)
    assert plain == spec
    assert plain["r0"] == [target(4 + j) for j in range(20)]
    assert spec_steps < plain_steps
    assert 0 < stats.accepted_tokens < stats.draft_tokens
    # a Mamba state was kept after each draft token, to roll back to
    assert saves and all(pos > 0 for _, pos in saves)
    assert m.pool.num_free_large() == 64 and not m.reqs


def test_rejected_draft_adopts_the_saved_state():
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (MAMBA, 1, 1)], 16), enable_prefix_caching=False)
    m.add("a", [1, 2, 3], 3)
    m.allocate("a", 0, 3)
    m.commit("a", 3)
    m.reqs["a"].tokens.append(9)
    running = m.page_tables("a")[1][0]
    act = m.allocate("a", 3, 6, num_draft=2)       # token 9 + 2 drafts
    scratch = {pos: page for g, pos, page in act.saves}
    assert sorted(scratch) == [4, 5]
    m.commit("a", 5)                          # first draft accepted, second rejected
    assert m.page_tables("a")[1] == (scratch[5],) and running != scratch[5]
    m.check_invariants()
