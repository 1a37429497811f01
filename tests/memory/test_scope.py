"""Kind questions are answered by the kind's policy: the scope rule the model
and the simulator use, the token-paged alignment, and the registry."""

from __future__ import annotations

from helpers import BUDGET8, CHUNK8, CROSS, FULL, MAMBA, SLIDE8, VISION, tiny_plan
from jenga.memory.manager import MemoryManager
from jenga.memory.policies import REGISTRY, first_key, policy_for, serves
from jenga.memory.spec import LayerSpec


def test_scope_rules():
    slide4, chunk8 = LayerSpec("sliding", "float32", 1, 1, window=4), CHUNK8
    assert [first_key(slide4, p) for p in (0, 3, 4, 9)] == [0, 0, 1, 6]
    assert [first_key(chunk8, p) for p in (0, 7, 8, 17)] == [0, 0, 8, 16]
    assert first_key(FULL, 100) == 0
    slide6 = LayerSpec("sliding", "float32", 1, 1, window=6)
    assert serves(slide6, 4, 0) and not serves(slide6, 8, 0) and not serves(slide6, 0, 0)
    assert serves(chunk8, 0, 8) and not serves(chunk8, 0, 4)
    assert serves(FULL, 0, 0) and serves(FULL, 5, 0)


def test_policy_first_needed_is_the_spec_scope():
    plan = tiny_plan([(SLIDE8, 1, 4), (CHUNK8, 1, 4)], 8)
    m = MemoryManager(plan)
    assert [m.policies[0].first_needed(p) for p in (0, 7, 8, 20)] == [first_key(SLIDE8, p) for p in (0, 7, 8, 20)]
    assert [m.policies[1].first_needed(p) for p in (0, 7, 8, 20)] == [0, 0, 8, 16]


def test_token_paged_kinds_set_the_hit_alignment():
    assert [k for k, cls in REGISTRY.items() if cls.token_paged] == ["full", "sliding", "chunked", "budget"]
    # a budget group's 8-token pages count, as they do for the checkpoint interval
    m = MemoryManager(tiny_plan([(FULL, 1, 4), (BUDGET8, 1, 8), (MAMBA, 1, 1)], 8))
    assert m.align == 8
    assert [policy_for(s.kind).decoder_layer for s in (FULL, CROSS, VISION, MAMBA)] == [True, True, False, True]
