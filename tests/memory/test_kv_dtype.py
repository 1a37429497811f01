"""Per-group KV dtypes: the rule's syntax, what it changes in a shape, and
that fp8 K/V doubles the tokens a pool holds at no extra waste."""

import pytest

from jenga.memory.kv_dtype import KVDtypeRule
from jenga.memory.planner import build_plan
from jenga.memory.shapes.presets import get_preset
from jenga.memory.spec import LayerSpec, ModelShape

SHAPE = ModelShape("toy", (LayerSpec("sliding", "bfloat16", 2, 64, window=128), LayerSpec("full", "bfloat16", 2, 64),
                           LayerSpec("mamba", "bfloat16", conv_state=(256, 4), ssm_state=(256, 16),
                                     state_dtype="float32")), 4096)


def test_a_bare_dtype_applies_to_kv_layers_only():
    out = KVDtypeRule.parse("fp8").apply(SHAPE)
    assert [(s.kind, s.dtype, s.state_dtype) for s in out.layers] == [
        ("sliding", "fp8_e4m3", ""), ("full", "fp8_e4m3", ""), ("mamba", "bfloat16", "float32")]
    assert KVDtypeRule.parse("auto").apply(SHAPE) is SHAPE


def test_per_kind_overrides():
    out = KVDtypeRule.parse("full=fp8_e5m2,sliding=auto").apply(SHAPE)
    assert [s.dtype for s in out.layers] == ["bfloat16", "fp8_e5m2", "bfloat16"]
    named = KVDtypeRule.parse("fp8,mamba=fp8").apply(SHAPE)      # Mamba only when asked
    assert (named.layers[2].dtype, named.layers[2].state_dtype) == ("fp8_e4m3", "fp8_e4m3")


@pytest.mark.parametrize("bad, field", [("fp4", "unknown dtype 'fp4'"), ("attn=fp8", "unknown layer kind 'attn'"),
                                        ("", "kv_cache_dtype must be")])
def test_bad_rules_name_the_part(bad, field):
    with pytest.raises(ValueError, match=field):
        KVDtypeRule.parse(bad)


def test_fp8_doubles_capacity_against_bf16_without_waste():
    shape = get_preset("gemma-2-9b")
    bf16 = build_plan(shape, 1 << 30)
    fp8 = build_plan(KVDtypeRule.parse("fp8").apply(shape), 1 << 30)
    for a, b in zip(bf16.groups, fp8.groups):
        assert b.small_page_bytes * 2 == a.small_page_bytes and b.padding_bytes == a.padding_bytes == 0
    tokens = lambda p: sum(p.num_small_pages(g.gid) * g.page_tokens for g in p.groups)   # noqa: E731
    assert tokens(fp8) == 2 * tokens(bf16)
