"""fp8 K/V through the real engine: pages in float8, half the bytes of the
compute dtype, greedy tokens and logits close to the unquantised engine's."""

import pytest
import torch
from engine_helpers import tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan

PROMPTS = [[(5 * i + 7 * j) % 250 for i in range(30 + 7 * j)] for j in range(4)]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def run(path, kv_cache_dtype):
    e = LLMEngine(EngineConfig(model=str(path), kv_cache_memory=1 << 20, cpu_threads=1,
                               kv_cache_dtype=kv_cache_dtype))
    for i, p in enumerate(PROMPTS):
        e.add_request(f"r{i}", p, GREEDY)
    final = {}
    while e.has_unfinished_requests():
        for out in e.step():
            if out.finished:
                final[out.request_id] = out.outputs[0].token_ids
    e.manager.check_invariants()
    return e, [final[f"r{i}"] for i in range(len(PROMPTS))]


def last_logits(e, prompt):
    """Logits of the prompt's last token, prefilled alone on fresh pages."""
    table = tuple(tuple(range(8)) for _ in e.plan.groups)
    seq = SeqStep("x", tuple(prompt), 0, table, True, SamplingParams(), len(prompt))
    return e.runner.forward(StepPlan(0, (seq,))).logits[0]


def test_fp8_kv_stays_close_to_the_unquantised_engine(tmp_path):
    tiny_checkpoint("llama", tmp_path)
    ref_engine, ref = run(tmp_path, "auto")
    e, got = run(tmp_path, "fp8")
    assert {g.spec.dtype for g in e.plan.groups} == {"fp8_e4m3"}
    assert all(e.kv_pool.kv_view(i)[0].dtype == torch.float8_e4m3fn for i in range(len(e.shape.layers)))
    # 1 byte per element against fp32's 4: four times the pages in the same pool
    assert e.plan.num_small_pages(0) == 4 * ref_engine.plan.num_small_pages(0)
    assert got == ref          # every greedy token agrees on this tiny model
    ref_logits, fp8_logits = last_logits(ref_engine, PROMPTS[3]), last_logits(e, PROMPTS[3])
    # e4m3 keeps 3 mantissa bits: the logits move by about 1% of their range
    assert float((ref_logits - fp8_logits).abs().max()) < 0.02 * float(ref_logits.abs().max())


def test_per_kind_rule_keeps_the_sliding_group_unquantised(tmp_path):
    tiny_checkpoint("gemma2", tmp_path)
    e, got = run(tmp_path, "full=fp8,sliding=auto")
    assert [(g.spec.kind, g.spec.dtype) for g in e.plan.groups] == [("sliding", "float32"), ("full", "fp8_e4m3")]
    assert got == run(tmp_path, "auto")[1]


def test_bad_dtype_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        EngineConfig(kv_cache_dtype="int4")


def test_checkpoint_kv_scales_are_read(tmp_path):
    from safetensors.torch import load_file, save_file
    tiny_checkpoint("llama", tmp_path)
    f = next(tmp_path.glob("*.safetensors"))
    weights = load_file(str(f))
    weights["model.layers.1.self_attn.k_scale"] = torch.tensor(0.5)
    weights["model.layers.1.self_attn.v_scale"] = torch.tensor([0.25])
    save_file(weights, str(f), metadata={"format": "pt"})
    e, got = run(tmp_path, "fp8")
    attn = [layer.self_attn for layer in e.model.model.layers]
    assert [(a.k_scale, a.v_scale) for a in attn] == [(1.0, 1.0), (0.5, 0.25)]
    assert len(got) == len(PROMPTS)
