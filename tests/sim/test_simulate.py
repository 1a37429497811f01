"""simulate(): the real scheduler and memory manager on a simulated clock.

Tiny hand-built plans (tests/memory/helpers.py) keep these fast; exact
values come from the cost model applied to the steps the scheduler must
produce."""

from __future__ import annotations

import json
import math

import pytest

from helpers import CROSS, FULL, SLIDE8, VISION, tiny_plan
from jenga.memory.spec import ModelShape
from jenga.memory.types import ImageRef
from jenga.sched.config import SchedulerConfig
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan
from jenga.sim.cost import CostModel, CostParams
from jenga.sim.gpus import GPUSpec, get_gpu
from jenga.sim.report import format_reports, plot_reports
from jenga.sim.simulate import compare, default_kv_budget, simulate
from jenga.sim.trace import TraceRequest
from jenga.sim.workloads import mmlu_pro, mmmu_pro, multiturn

SHAPE = ModelShape("tiny", (FULL, SLIDE8), 512, weights_bytes=10**6, active_params=10**6, hidden_size=8)
FULL_SHAPE = ModelShape("full", (FULL,), 4096, weights_bytes=10**6, active_params=10**6, hidden_size=8)
GPU = get_gpu("h100")
CFG = SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8)


def run(reqs, num_large=400, kinds=((FULL, 1, 4), (SLIDE8, 1, 4)), shape=SHAPE, cfg=CFG, **kw):
    plan = tiny_plan(list(kinds), num_large)
    return simulate(shape, reqs, GPU, plan=plan, kv_budget_bytes=plan.pool_bytes, sched_config=cfg, **kw)


def test_one_request_has_exact_latencies():
    r = run([TraceRequest(0.0, tuple(range(20, 30)), 3, req_id="a")], kinds=((FULL, 1, 4),), shape=FULL_SHAPE)
    cost = CostModel(FULL_SHAPE, tiny_plan([(FULL, 1, 4)], 4), GPU, CostParams())
    p = SamplingParams(max_tokens=3, ignore_eos=True)
    d = [cost.step(StepPlan(1, (SeqStep("a", (0,) * n, s, (), True, p, 10),))).duration_s
         for s, n in ((0, 10), (10, 1), (11, 1))]
    assert (r.finished, r.output_tokens, r.steps) == (1, 3, 3)
    assert r.mean_ttft_s == pytest.approx(d[0], rel=1e-12)
    assert r.mean_tpot_s == pytest.approx((d[1] + d[2]) / 2, rel=1e-12)
    assert r.duration_s == r.mean_latency_s == pytest.approx(sum(d), rel=1e-12)
    assert r.mean_decode_batch == 1.0 and r.series.batch == (1, 1, 1)


def test_workload_finishes_and_report_is_sane():
    reqs = mmlu_pro(20, seed=1, shared_prefix_len=32, prompt_len=(40, 100), output_len=10, rate=50.0)
    r = run(reqs)
    assert (r.num_requests, r.finished, r.rejected, r.errored) == (20, 20, 0, 0)
    assert r.output_tokens == 200
    assert r.duration_s >= max(x.arrival_time for x in reqs)
    assert r.throughput_rps == pytest.approx(20 / r.duration_s)
    assert r.throughput_tps == pytest.approx(200 / r.duration_s)
    assert 0 < r.prefix_hit_rate < 32 / 40
    assert not r.saturated and 0 < r.mem_util < 1
    assert len(r.series.times) == r.steps == len(r.series.batch) == len(r.series.used_bytes)
    assert r.series.group_labels == ("full", "sliding(window=8)")
    assert r.summary()["throughput_rps"] == r.throughput_rps and "series" not in r.summary()
    assert json.loads(json.dumps(r.summary()))["saturation"]["bound_steps"] == r.saturation.bound_steps


def test_multiturn_hits_the_whole_history():
    reqs = multiturn(6, seed=0, turns=3, think_time=100.0)
    r = run(reqs, kinds=((FULL, 1, 4),), shape=FULL_SHAPE, num_large=4000)
    by_id = {x.req_id: x for x in reqs}
    expected = 0
    for x in reqs:
        s, t = x.req_id.rsplit("-t", 1)
        if t != "0":
            prev = by_id[f"{s}-t{int(t) - 1}"]
            expected += (prev.prompt_len + prev.output_len - 1) // 4 * 4   # full pages computed
    assert r.prefix_hit_rate == pytest.approx(expected / sum(x.prompt_len for x in reqs), rel=1e-12)


def test_memory_pressure_saturates_and_preempts_nothing_lost():
    reqs = [TraceRequest(0.0, tuple(range(i, i + 60)), 40, req_id=f"r{i}") for i in range(12)]
    r = run(reqs, num_large=60, kinds=((FULL, 1, 4),), shape=FULL_SHAPE)   # room for 2.4 requests
    assert r.finished == 12 and r.output_tokens == 12 * 40
    assert r.saturated and 0.5 < r.mem_util <= 1.0
    assert max(r.series.batch) < 12
    assert all(sum(u) <= r.pool_bytes for u in r.series.used_bytes)


def test_utilisation_is_true_need_when_memory_first_refuses():
    reqs = [TraceRequest(0.0, tuple(range(i, i + 60)), 40, req_id=f"r{i}") for i in range(12)]
    cfg = SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8, enable_prefix_caching=False)
    jenga = run(reqs, num_large=120, kinds=((FULL, 1, 4), (SLIDE8, 1, 4)), cfg=cfg)
    s = jenga.saturation
    assert jenga.saturated and jenga.mem_util == s.util_bound
    assert 0 < s.preempt_steps < s.bound_steps     # failed decodes, and refused admissions
    # jenga holds exactly the page-rounded need: nothing beyond whole pages
    assert s.used == s.rounded and s.util_bound < s.used < 1
    text = format_reports([jenga])
    assert f"{100 * jenga.mem_util:.1f}% {100 * s.util_preempt:.1f}%" in " ".join(text.split())
    # as max-page: both layers store every token; its own count calls the
    # out-of-window tokens needed, true need does not
    maxp = run(reqs, num_large=120, kinds=((FULL, 2, 4),), cfg=cfg)
    m = maxp.saturation
    assert m.counted > 0.9 and m.used > 0.9 and maxp.mem_util < 0.55 and m.rounded < 0.6


def test_unsaturated_run_reports_the_mean_over_all_steps():
    r = run([TraceRequest(0.0, tuple(range(8)), 4, req_id="a")], kinds=((FULL, 1, 4),), shape=FULL_SHAPE)
    # one request of 8 + 4 tokens alone in 400 pages of 4 tokens (12800 B):
    # steps end at 8, 9, 10, 11 tokens of 8 B
    assert not r.saturated and r.saturation.bound_steps == 0 and r.saturation.util_preempt is None
    assert r.mem_util == pytest.approx(sum(8 * n for n in (8, 9, 10, 11)) / 4 / 12800, rel=1e-12)
    assert r.series.needed_bytes == (64, 72, 80, 88)


def test_rejected_requests_are_counted_and_clock_jumps_to_arrivals():
    reqs = [TraceRequest(5.0, tuple(range(600)), 2, req_id="long"),
            TraceRequest(5.0, (1, 2, 3), 2, req_id="ok")]
    r = run(reqs)
    assert (r.finished, r.rejected) == (1, 1)
    assert r.duration_s > 5.0 and r.mean_ttft_s < 0.1
    with pytest.raises(ValueError, match="unique"):
        run([TraceRequest(0.0, (1,), 1, req_id="x"), TraceRequest(0.0, (2,), 1, req_id="x")])


def test_cross_attention_model_encodes_each_image_once():
    shape = ModelShape("mllama-like", (FULL, CROSS), 512, weights_bytes=10**6, active_params=10**6, hidden_size=8)
    reqs = mmmu_pro(6, seed=0, image_tokens=40, image_tokens_std=5, text_tokens=12, output_len=5)
    r = run(reqs, kinds=((FULL, 1, 4), (CROSS, 1, 4)), shape=shape)
    assert (r.finished, r.encoder_runs, r.output_tokens) == (6, 6, 30)
    assert r.series.group_labels == ("full", "cross")
    same = [TraceRequest(0.0, tuple(range(k, k + 10)), 3, (ImageRef(0, 40, "same"),), req_id=f"s{k}")
            for k in range(3)]
    one_image = run(same, kinds=((FULL, 1, 4), (CROSS, 1, 4)), shape=shape,
                    cfg=SchedulerConfig(max_num_batched_tokens=10, max_num_seqs=8))
    assert one_image.finished == 3 and one_image.encoder_runs == 1     # cached by content hash


def test_inline_vision_model_runs_with_chunked_prefill():
    shape = ModelShape("llava-like", (FULL, VISION), 512, weights_bytes=10**6, active_params=10**6, hidden_size=8)
    reqs = mmmu_pro(4, seed=1, image_tokens=100, image_tokens_std=10, text_tokens=10, output_len=4, inline_images=True)
    r = run(reqs, kinds=((FULL, 1, 4), (VISION, 1, 4)), shape=shape,
            cfg=SchedulerConfig(max_num_batched_tokens=32, max_num_seqs=8))
    assert (r.finished, r.encoder_runs, r.output_tokens) == (4, 4, 16)


def test_default_kv_budget():
    shape = ModelShape("big", (FULL,), 8, weights_bytes=70 * 10**9)
    assert default_kv_budget(shape, GPU) == 72 * 10**9 - 70 * 10**9
    assert default_kv_budget(shape, GPU, tp=2) == 72 * 10**9 - 35 * 10**9   # one rank: 1/2 of the weights
    with pytest.raises(ValueError, match="'big'.*raise tp"):
        default_kv_budget(shape, GPUSpec("small", 10**9, 1.0, 1.0))


def test_report_table_and_plot(tmp_path):
    a = run(mmlu_pro(6, seed=0, shared_prefix_len=8, prompt_len=(20, 40), output_len=4))
    text = format_reports([a])
    assert text.splitlines()[1].split()[:3] == ["jenga", "6", "0"]
    out = plot_reports([a, a], tmp_path / "p.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_allocators_with_planner():
    pytest.importorskip("jenga.memory.planner")
    reqs = mmlu_pro(8, seed=0, shared_prefix_len=16, prompt_len=(30, 60), output_len=8)
    comp = compare(SHAPE, reqs, GPU, ["max-page", "jenga"], kv_budget_bytes=200_000, sched_config=CFG)
    assert comp.reference == "jenga" and comp.speedups["jenga"] == 1.0
    assert [r.allocator for r in comp.reports] == ["max-page", "jenga"]
    assert all(r.finished == 8 for r in comp.reports)
    assert math.isfinite(comp.speedups["max-page"])
    with pytest.raises(ValueError, match="repeats"):
        compare(SHAPE, reqs, GPU, ["jenga", "jenga"])
