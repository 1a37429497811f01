"""Attention metadata built from a StepPlan: exact slots, tables, batches."""

from __future__ import annotations

import pytest
import torch

from jenga.model.attn_metadata import build_attn_metadata, build_group_metadata
from jenga.sched.step import NO_PAGE, SeqStep, StepPlan
from model_helpers import GREEDY, plan_from_specs, spec_for

CPU = torch.device("cpu")


def _seq(rid, start, n, tables):
    return SeqStep(rid, tuple(range(n)), start, tables, True, GREEDY, start + n)


def test_sliding_group_metadata_exact():
    plan = plan_from_specs([spec_for(1, 2, 6, 0)], 4, 16)
    step = StepPlan(3, (_seq("a", 9, 1, ((NO_PAGE, 5, 2),)),
                        _seq("b", 0, 3, ((7,),)),
                        _seq("c", 4, 3, ((3, 4),))))
    m = build_group_metadata(step, plan.groups[0], CPU)
    assert (m.window, m.chunk, m.page_tokens, m.num_seqs) == (6, 0, 4, 3)
    assert m.query_start == (0, 1, 4, 7)
    assert m.positions.tolist() == [9, 0, 1, 2, 4, 5, 6]
    assert m.slot_mapping.tolist() == [9, 28, 29, 30, 16, 17, 18]
    assert m.slot_pages.tolist() == [2, 7, 7, 7, 4, 4, 4] and m.slot_offsets.tolist() == [1, 0, 1, 2, 0, 1, 2]
    assert m.page_table.tolist() == [[0, 5, 2], [7, 0, 0], [3, 4, 0]]
    assert m.page_valid.tolist() == [[False, True, True], [True, False, False], [True, True, False]]
    assert m.context_lens.tolist() == [10, 3, 7]
    decode, prefill = m.batches                      # bucketed by new-token count, first-seen order
    assert decode.rows.tolist() == [[0]] and decode.pages.tolist() == [[5, 2]]   # page 0 is out of window
    assert decode.page_start.tolist() == [4] and decode.k_pos.tolist() == [list(range(4, 12))]
    assert decode.mask.tolist() == [[[True] * 6 + [False] * 2]]
    assert decode.k_valid.tolist() == [[True] * 6 + [False] * 2]
    assert prefill.rows.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert prefill.pages.tolist() == [[7, 0], [3, 4]]    # b padded with page 0
    assert prefill.k_valid.tolist() == [[True] * 3 + [False] * 5, [True] * 7 + [False]]
    # c's query at 6 sees 1..6 (window 6), its query at 4 sees 0..4
    assert prefill.mask[1, 2].tolist() == [False] + [True] * 6 + [False]
    assert prefill.mask[1, 0].tolist() == [True] * 5 + [False] * 3


def test_missing_pages_raise():
    plan = plan_from_specs([spec_for(1, 2, 6, 0)], 4, 16)
    g = plan.groups[0]
    with pytest.raises(ValueError, match="request a: group 0 page 1 is NO_PAGE"):
        build_group_metadata(StepPlan(0, (_seq("a", 9, 1, ((NO_PAGE, NO_PAGE, 2),)),)), g, CPU)
    with pytest.raises(ValueError, match="page table has 1 entries, tokens up to 6 need 2"):
        build_group_metadata(StepPlan(0, (_seq("a", 4, 2, ((1,),)),)), g, CPU)


def test_attn_metadata_maps_layers_to_groups():
    plan = plan_from_specs([spec_for(1, 2, 0, 0), spec_for(1, 2, 6, 0), spec_for(1, 2, 0, 0)], 4, 16)
    step = StepPlan(0, (_seq("a", 0, 5, ((0, 1), (2, 3))),))
    meta = build_attn_metadata(step, plan, [0, 2], backend="portable")
    assert meta.layer_group == {0: 0, 2: 0, 1: 1}
    assert meta.groups[1] is None and meta.for_layer(2) is meta.groups[0]
    assert meta.positions.tolist() == [0, 1, 2, 3, 4] and meta.backend == "portable"
    with pytest.raises(ValueError, match="no attention metadata for layer 1"):
        meta.for_layer(1)
    with pytest.raises(ValueError, match=r"attention layers \[5\] are in no group"):
        build_attn_metadata(step, plan, [0, 5])
