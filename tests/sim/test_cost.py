"""Roofline cost model: exact FLOPs, bytes and times for hand-made steps.

Shape: 2 full + 2 sliding(64) layers of 8 KV heads x 128 (bf16: 4096 bytes
per token per layer), hidden 1024, 1e9 active parameters, 2e9 bytes of
weights, on a made-up GPU (1e15 FLOP/s, 1e12 B/s) at 50% efficiency."""

from __future__ import annotations

import pytest

from helpers import tiny_plan
from jenga.memory.spec import LayerSpec, ModelShape
from jenga.memory.types import ImageRef
from jenga.sched.params import SamplingParams
from jenga.sched.step import PageCopy, SeqStep, StateSave, StepPlan
from jenga.memory.policies import policy_for
from jenga.memory.policies.work import chunk_prefix as _chunk_prefix
from jenga.memory.policies.work import window_pairs as _window_pairs
from jenga.sim.cost import CostModel, CostParams


class _Kernels:
    """A layer's step work, asked of its kind's policy as the cost model does."""

    def __getitem__(self, kind):
        return lambda spec, s: policy_for(kind).step_work(spec, s.start, s.end, s.images, s.encoder_runs)


KERNELS = _Kernels()
from jenga.sim.gpus import GPUSpec

FULL = LayerSpec("full", "bfloat16", 8, 128)
SLIDE = LayerSpec("sliding", "bfloat16", 8, 128, window=64)
BPT = 4096
SHAPE = ModelShape("toy", (FULL, SLIDE, FULL, SLIDE), 1 << 20, weights_bytes=2_000_000_000,
                   active_params=1_000_000_000, hidden_size=1024)
GPU = GPUSpec("test", 10**10, 1e15, 1e12)
PARAMS = CostParams(mfu=0.5, bandwidth_efficiency=0.5, step_overhead_s=0.001, seq_overhead_s=0.0)
PLAN = tiny_plan([(FULL, 2, 16), (SLIDE, 2, 16)], 8)
P = SamplingParams(max_tokens=4, ignore_eos=True)


def seq(rid, start, n, sample=True, prompt_len=None, images=(), runs=(), saves=()):
    return SeqStep(rid, tuple(range(n)), start, (), sample, P, prompt_len or start + n, tuple(images),
                   tuple(runs), tuple(saves))


def model(shape=SHAPE, plan=PLAN, **kw):
    return CostModel(shape, plan, GPU, PARAMS, **kw)


def decode_step(n_seqs, context):
    return StepPlan(1, tuple(seq(f"r{i}", context - 1, 1, prompt_len=10) for i in range(n_seqs)))


def test_decode_is_memory_bound_with_exact_bytes():
    c = model().step(decode_step(8, 1024))
    # per seq: full layers read 1024 tokens, sliding layers 64; every layer writes 1
    assert c.state_read_bytes == 8 * BPT * (2 * 1024 + 2 * 64)
    assert c.state_write_bytes == 8 * BPT * 4
    assert c.weight_bytes == 2e9
    assert c.linear_flops == 2e9 * 8
    assert c.attention_flops == 8 * 4 * 1024 * (2 * 1024 + 2 * 64)
    assert c.bound == "memory"
    assert c.memory_s == pytest.approx((2e9 + 8 * BPT * 2180) / 5e11, rel=1e-12)
    assert c.duration_s == pytest.approx(c.memory_s + 0.001, rel=1e-12)


def test_decode_time_grows_exactly_with_kv_read():
    short, long = model().step(decode_step(8, 1024)), model().step(decode_step(8, 2048))
    # only full layers read more: 1024 more tokens x 2 layers x 8 seqs
    assert long.state_read_bytes - short.state_read_bytes == 8 * 2 * 1024 * BPT
    assert long.duration_s - short.duration_s == pytest.approx(8 * 2 * 1024 * BPT / 5e11, rel=1e-9)
    more = model().step(decode_step(16, 1024))
    assert more.state_read_bytes == 2 * short.state_read_bytes


def test_big_prefill_is_compute_bound():
    c = model().step(StepPlan(1, (seq("p", 0, 2048),)))
    full_pairs = 2048 * 2049 // 2
    slide_pairs = 64 * 65 // 2 + 64 * (2048 - 64)
    assert c.attention_flops == 4 * 1024 * 2 * (full_pairs + slide_pairs)
    assert c.linear_flops == 2e9 * 2048
    assert c.bound == "compute"
    assert c.compute_s == pytest.approx((2e9 * 2048 + 4 * 1024 * 2 * (full_pairs + slide_pairs)) / 5e14, rel=1e-12)
    assert c.duration_s == pytest.approx(c.compute_s + 0.001, rel=1e-12)


def test_chunked_prefill_reads_sliding_window_only():
    c = model().step(StepPlan(1, (seq("p", 1000, 100),)))
    # full: keys [0, 1100); sliding: keys [1000 - 63, 1100)
    assert c.state_read_bytes == 2 * 1100 * BPT + 2 * (1100 - 937) * BPT


@pytest.mark.parametrize("s,e,w", [(0, 10, 4), (3, 9, 4), (5, 6, 8), (0, 1, 1), (10, 40, 7), (2, 2, 5)])
def test_window_pairs_closed_form(s, e, w):
    assert _window_pairs(s, e, w) == sum(min(p + 1, w) for p in range(s, e))


@pytest.mark.parametrize("s,e,c", [(0, 10, 4), (3, 17, 4), (8, 9, 8), (0, 1, 1), (5, 100, 16)])
def test_chunk_pairs_closed_form(s, e, c):
    assert _chunk_prefix(e, c) - _chunk_prefix(s, c) == sum(p % c + 1 for p in range(s, e))


def test_chunked_layer_reads_from_its_chunk_start():
    spec = LayerSpec("chunked", "bfloat16", 8, 128, chunk=8)
    w = KERNELS["chunked"](spec, seq("c", 10, 3))
    assert w == (3 + 4 + 5, (13 - 8) * BPT, 3 * BPT)


def test_mamba_cross_and_vision_work():
    mamba = LayerSpec("mamba", "float32", conv_state=(4, 3), ssm_state=(4, 16))
    assert KERNELS["mamba"](mamba, seq("m", 50, 1)) == (0, 4 * 76, 4 * 76)
    img = ImageRef(2, 100, "h")
    cross = LayerSpec("cross", "bfloat16", 8, 128)
    assert KERNELS["cross"](cross, seq("x", 0, 5, images=[img], runs=[0])) == (5 * 100, 100 * BPT, 100 * BPT)
    assert KERNELS["cross"](cross, seq("x", 5, 1, images=[img])) == (100, 100 * BPT, 0)
    vision = LayerSpec("vision", "bfloat16", hidden_size=1024)
    # a chunk over prompt positions [50, 80) consumes image tokens 50..79 of [2, 102)
    assert KERNELS["vision"](vision, seq("v", 50, 30, images=[img])) == (0, 30 * 2048, 0)


def test_encoder_runs_saves_copies_and_zeros():
    img = ImageRef(0, 1000, "h")
    base = model().step(StepPlan(1, (seq("a", 0, 10, images=[img]),)))
    run = model().step(StepPlan(1, (seq("a", 0, 10, images=[img], runs=[0]),)))
    assert run.encoder_flops - base.encoder_flops == 2 * 0.6e9 * 1000
    extra = model().step(StepPlan(1, (seq("a", 0, 10, images=[img], saves=[StateSave(1, 8, 3)]),),
                                  copies=(PageCopy(0, 1, 2),), zeros=((1, 5),)))
    small = [g.small_page_bytes for g in PLAN.groups]
    assert extra.state_read_bytes - base.state_read_bytes == small[0]
    assert extra.state_write_bytes - base.state_write_bytes == small[1] + small[0] + small[1]


def test_cost_does_not_depend_on_page_size():
    step = decode_step(4, 3000)
    other = tiny_plan([(FULL, 4, 64)], 8)   # one merged group, bigger pages
    assert model().step(step).duration_s == model(plan=other).step(step).duration_s


def test_tensor_parallel_divides_work_and_charges_two_allreduces_per_layer():
    linked = GPUSpec("linked", 10**10, 1e15, 1e12, 1e11)
    one = CostModel(SHAPE, PLAN, linked, PARAMS).step(decode_step(8, 1024))
    four = CostModel(SHAPE, PLAN, linked, PARAMS, tp=4).step(decode_step(8, 1024))
    # 8 KV heads over 4 ranks: each rank reads and writes a quarter of the state
    assert four.state_read_bytes * 4 == one.state_read_bytes
    assert four.memory_s == pytest.approx(one.memory_s / 4, rel=1e-12)
    assert four.compute_s == pytest.approx(one.compute_s / 4, rel=1e-12)
    assert four.overhead_s == one.overhead_s == 0.001 and one.comm_s == 0.0
    # 4 layers x 2 ring all-reduces of 8 tokens x 1024 x 2 B, each GPU sending 2 x 3/4 of it
    assert four.comm_s == pytest.approx(8 * (10e-6 + 1.5 * 8 * 1024 * 2 / (1e11 * 0.8)), rel=1e-12)
    assert four.duration_s == pytest.approx(four.memory_s + four.comm_s + 0.001, rel=1e-12)
    # 16 ranks over 8 KV heads: each keeps one head (replicated), an eighth, not a sixteenth
    sixteen = CostModel(SHAPE, PLAN, linked, PARAMS, tp=16).step(decode_step(8, 1024))
    assert sixteen.state_read_bytes * 8 == one.state_read_bytes
    with pytest.raises(ValueError, match="tp"):
        model(tp=0)
    with pytest.raises(ValueError, match="gpu test has no interconnect_bandwidth"):
        model(tp=2)


def test_overheads_and_empty_plan():
    m = CostModel(SHAPE, PLAN, GPU, CostParams(step_overhead_s=0.002, seq_overhead_s=1e-4))
    assert m.step(decode_step(10, 100)).overhead_s == pytest.approx(0.002 + 10 * 1e-4)
    assert m.step(StepPlan(1, ())).duration_s == 0.0
    # only page copies (compaction in a step whose requests were all
    # preempted): their bytes, no weights, no overhead
    moved = m.step(StepPlan(1, (), copies=(PageCopy(0, 1, 2), PageCopy(1, 3, 4))))
    small = sum(g.small_page_bytes for g in PLAN.groups)
    assert (moved.weight_bytes, moved.state_read_bytes, moved.state_write_bytes) == (0, small, small)
    assert moved.duration_s == pytest.approx(2 * small / (GPU.hbm_bandwidth * m.params.bandwidth_efficiency))


def test_q_dim_falls_back_to_kv_width_without_hidden_size():
    shape = ModelShape("nohidden", (FULL,), 4096, active_params=0)
    c = CostModel(shape, tiny_plan([(FULL, 1, 16)], 4), GPU, PARAMS).step(StepPlan(1, (seq("a", 9, 1),)))
    assert c.attention_flops == 4 * (8 * 128) * 10


@pytest.mark.parametrize("field,value", [("mfu", 0.0), ("mfu", 1.5), ("bandwidth_efficiency", -1.0),
                                         ("step_overhead_s", -1.0), ("vision_params", -1.0)])
def test_cost_params_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        CostParams(**{field: value})


def test_graph_decode_drops_layer_launches_on_decode_only_steps():
    eager = CostParams(step_overhead_s=0.002, seq_overhead_s=0.0, layer_overhead_s=0.001)
    graphs = CostParams(step_overhead_s=0.002, seq_overhead_s=0.0, layer_overhead_s=0.001, graph_decode=True)
    prefill = StepPlan(1, (seq("p", 0, 8),))
    e, g = CostModel(SHAPE, PLAN, GPU, eager), CostModel(SHAPE, PLAN, GPU, graphs)
    assert e.step(decode_step(3, 100)).overhead_s == pytest.approx(0.002 + 4 * 0.001)
    assert g.step(decode_step(3, 100)).overhead_s == pytest.approx(0.002)
    assert g.step(prefill).overhead_s == e.step(prefill).overhead_s == pytest.approx(0.006)
    assert CostParams.vllm_v0(eager=False) == CostParams.vllm_v0_eager().__class__(
        **{**CostParams.vllm_v0_eager().__dict__, "graph_decode": True})
    assert CostParams.vllm_v0() == CostParams.vllm_v0_eager()
