"""SimRunner: StepResults with the cost model's time and deterministic tokens."""

from __future__ import annotations

import pytest

from helpers import tiny_plan
from jenga.memory.spec import LayerSpec, ModelShape
from jenga.memory.types import ImageRef
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan
from jenga.sim.cost import CostParams
from jenga.sim.gpus import get_gpu
from jenga.sim.runner import TOKEN_LOW, SimRunner, sim_token

FULL = LayerSpec("full", "bfloat16", 8, 128)
SHAPE = ModelShape("toy", (FULL, FULL), 4096, weights_bytes=10**9, active_params=5 * 10**8, hidden_size=1024)
PLAN = tiny_plan([(FULL, 2, 16)], 8)
P = SamplingParams(max_tokens=4, ignore_eos=True)


def seq(rid, start, n, sample, **kw):
    return SeqStep(rid, tuple(range(n)), start, (), sample, P, start + n, **kw)


def test_sim_token_is_a_pure_function_in_range():
    assert sim_token("a", 7) == sim_token("a", 7)
    toks = {sim_token("a", p, 100) for p in range(2000)}
    assert min(toks) >= TOKEN_LOW and max(toks) < 100 and len(toks) == 100 - TOKEN_LOW
    assert [sim_token("a", p) for p in range(5)] != [sim_token("b", p) for p in range(5)]
    with pytest.raises(ValueError, match="vocab_size"):
        sim_token("a", 0, TOKEN_LOW)


def test_execute_samples_only_where_asked_and_reports_cost():
    r = SimRunner(SHAPE, PLAN, get_gpu("h100"), CostParams())
    img = ImageRef(0, 50, "h")
    plan = StepPlan(3, (seq("a", 0, 64, False), seq("b", 99, 1, True),
                        seq("c", 0, 4, True, images=(img,), encoder_runs=(0,))))
    res = r.execute(plan)
    assert res.sampled == {"b": (sim_token("b", 100),), "c": (sim_token("c", 4),)}
    assert res.duration_s == r.last_cost.duration_s > 0
    assert res.encoder_runs == 1


def test_results_do_not_depend_on_batch_company():
    r = SimRunner(SHAPE, PLAN, get_gpu("h100"))
    alone = r.execute(StepPlan(1, (seq("b", 9, 1, True),))).sampled["b"]
    crowd = r.execute(StepPlan(2, (seq("a", 0, 3, True), seq("b", 9, 1, True)))).sampled["b"]
    assert alone == crowd == (sim_token("b", 10),)


def test_draft_tokens_are_refused():
    r = SimRunner(SHAPE, PLAN, get_gpu("h100"))
    spec_seq = seq("a", 5, 3, True)._replace(num_spec=2)
    with pytest.raises(ValueError, match="draft"):
        r.execute(StepPlan(1, (spec_seq,)))
