"""merge_shapes: the target's layers, then the draft's tagged "draft", one
plan for both with separate groups even where the specs are equal."""

import pytest

from jenga.engine.spec_shape import draft_layer_offset, merge_shapes
from jenga.memory.planner import build_plan
from jenga.memory.spec import ModelShape, full, sliding

TARGET = ModelShape("t", (full(8, 128), sliding(1024, 8, 128), full(8, 128)), 8192, weights_bytes=100,
                    active_params=50, hidden_size=4096)
DRAFT = ModelShape("d", (full(8, 128), full(2, 64)), 4096, weights_bytes=10, active_params=5, hidden_size=512)


def test_draft_layers_follow_the_target_tagged():
    m = merge_shapes(TARGET, DRAFT)
    assert m.layers == TARGET.layers + (full(8, 128, model="draft"), full(2, 64, model="draft"))
    assert (m.name, m.max_context, m.weights_bytes, m.active_params, m.hidden_size) == \
        ("t+draft:d", 4096, 110, 55, 4096)
    assert draft_layer_offset(TARGET) == 3


def test_equal_specs_of_the_two_models_form_separate_groups():
    plan = build_plan(merge_shapes(TARGET, DRAFT), 1 << 26, page_tokens=16)
    got = sorted((g.spec.model, g.spec.kind, g.layers) for g in plan.groups)
    assert got == [("draft", "full", (3,)), ("draft", "full", (4,)), ("main", "full", (0, 2)),
                   ("main", "sliding", (1,))]
    # one large page carves into every group's small pages: no split by hand
    assert all(plan.large_page_bytes % g.small_page_bytes == 0 for g in plan.groups)


def test_bad_tags():
    with pytest.raises(ValueError, match="tag must name the draft model"):
        merge_shapes(TARGET, DRAFT, tag="main")
    with pytest.raises(ValueError, match="already has layers tagged 'draft'"):
        merge_shapes(merge_shapes(TARGET, DRAFT), DRAFT)
    other = ModelShape("o", (full(2, 64, model="eagle"),), 100)
    with pytest.raises(ValueError, match=r"has layers of other models \['eagle'\]"):
        merge_shapes(TARGET, other)
