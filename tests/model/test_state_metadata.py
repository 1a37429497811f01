"""StateMetadata: seqs bucketed by new-token count, one running page per
mamba group, saves as (row, tokens into the step, page), and the refusals
(a token-style page table, saves outside the step or for a group without
state layers, a plan whose mamba shapes differ from the model's)."""

from __future__ import annotations

import pytest

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.model.state_metadata import StateBatch, build_state_metadata, check_state_plan
from jenga.sched.params import SamplingParams
from jenga.sched.step import NO_PAGE, SeqStep, StateSave, StepPlan

MAMBA = LayerSpec("mamba", "float32", conv_state=(8, 4), ssm_state=(8, 2))
FULL = LayerSpec("full", "float32", 2, 4)
# layers 0 and 2 mamba (2 x 192 B states), layers 1 and 3 attention (4 tokens x 64 B)
PLAN = MemoryPlan((Group(0, MAMBA, (0, 2), 1, 192, 4), Group(1, FULL, (1, 3), 4, 256, 3)), 1536, 4,
                  base_page_tokens=4)
P = SamplingParams(temperature=0.0)


def seq(req, n, start, state_page, saves=()):
    return SeqStep(req, tuple(range(n)), start, ((state_page,), (0, 1, 2, 3)), True, P, start + n,
                   state_saves=tuple(StateSave(*s) for s in saves))


def test_buckets_pages_and_saves():
    step = StepPlan(0, (seq("a", 1, 9, 5), seq("b", 6, 0, 2, [(0, 4, 7), (0, 6, 3)]), seq("c", 1, 3, 4, [(0, 4, 1)])))
    meta = build_state_metadata(step, PLAN, (0, 2))
    assert meta.layer_group == {0: 0, 2: 0} and list(meta.groups) == [0]
    decode, prefill = meta.for_layer(2).batches
    assert decode.rows.tolist() == [[0], [7]] and decode.pages.tolist() == [5, 4]
    assert decode.saves == ((1, 1, 1),) and decode.keep == (1,)
    assert prefill.rows.tolist() == [[1, 2, 3, 4, 5, 6]] and prefill.pages.tolist() == [2]
    assert prefill.saves == ((0, 4, 7), (0, 6, 3)) and prefill.keep == (4, 6)
    with pytest.raises(ValueError, match="no state metadata for layer 1"):
        meta.for_layer(1)


def test_keep_is_sorted_and_distinct():
    b = StateBatch(None, None, ((0, 6, 1), (1, 2, 3), (1, 6, 4)))
    assert b.keep == (2, 6)


@pytest.mark.parametrize("table, match", [((1, 2), "must be one running-state page"),
                                          ((NO_PAGE,), "must be one running-state page")])
def test_running_page_must_be_one_real_page(table, match):
    s = SeqStep("a", (1, 2), 0, (table, (0,)), True, P, 2)
    with pytest.raises(ValueError, match=match):
        build_state_metadata(StepPlan(0, (s,)), PLAN, (0, 2))


@pytest.mark.parametrize("save, match", [((0, 3, 1), r"position 3 outside the step's tokens \(3, 5\]"),
                                         ((0, 6, 1), "position 6 outside"),
                                         ((1, 4, 1), "group 1, which holds no recurrent layer")])
def test_bad_saves_are_refused(save, match):
    with pytest.raises(ValueError, match=match):
        build_state_metadata(StepPlan(0, (seq("a", 2, 3, 0, [save]),)), PLAN, (0, 2))


def test_layer_outside_plan_is_refused():
    with pytest.raises(ValueError, match=r"recurrent layers \[5\] are in no group"):
        build_state_metadata(StepPlan(0, (seq("a", 1, 0, 0),)), PLAN, (0, 5))


def test_check_state_plan_compares_shapes():
    check_state_plan({0: ((8, 4), (8, 2)), 2: ((8, 4), (8, 2))}, PLAN)
    with pytest.raises(ValueError, match=r"layer 2: plan group 0 \(mamba\) stores conv \(8, 4\) / ssm \(8, 2\)"):
        check_state_plan({2: ((8, 4), (4, 2, 2))}, PLAN)
    with pytest.raises(ValueError, match="model layer 7 is in no group"):
        check_state_plan({7: ((8, 4), (8, 2))}, PLAN)
