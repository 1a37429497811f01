"""Tensor parallelism end to end: LLMEngine with tensor_parallel_size=2 on
CPU (gloo) spawns one worker process; greedy tokens equal TP=1's on the same
requests, with prefix-cache hits and preemptions inside the run; a killed
worker (llama) ends the engine with EngineDead naming it, a hung one
(gemma2-mqa: SIGSTOP) within the step timeout, and no process is left.
Process start-up costs seconds on a loaded machine, so each model spawns
one engine (module fixtures) that several tests share, in order."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from engine_helpers import tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.executor import EngineDead
from jenga.engine.llm_engine import LLMEngine
from jenga.engine.tp_executor import TPExecutor
from jenga.sched.params import SamplingParams

TIMEOUT_S = 10   # a step of these tiny models takes milliseconds
GREEDY = SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True)
SHARED = [(5 * i + 1) % 250 for i in range(24)]
# two share a 24-token prefix (hits once the first is cached), one is unrelated
PROMPTS = [SHARED + [7, 8, 9], [(3 * i + 2) % 250 for i in range(19)], SHARED + [40, 41]]


def _engine(path, tp: int, kv_bytes: int) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(path), device="cpu", cpu_threads=1, page_tokens=4,
                                  kv_cache_memory=kv_bytes, max_num_batched_tokens=16,
                                  tensor_parallel_size=tp, distributed_timeout_s=TIMEOUT_S))


def _run(eng: LLMEngine, prompts, prefix: str):
    for i, p in enumerate(prompts):
        eng.add_request(f"{prefix}{i}", p, GREEDY)
    final = {}
    while eng.has_unfinished_requests():
        for out in eng.step():
            if out.finished:
                final[out.request_id] = out
    return [list(final[f"{prefix}{i}"].outputs[0].token_ids) for i in range(len(prompts))]


def _workload(eng: LLMEngine):
    first = _run(eng, PROMPTS[:1], "warm")
    return first + _run(eng, PROMPTS * 2, "r")


@pytest.fixture(scope="module", params=["llama", "gemma2-mqa"])
def pair(request, tmp_path_factory):
    """(TP=1 engine, TP=2 engine) over one tiny checkpoint.  gemma2-mqa has
    one KV head, so both ranks keep a replica of it."""
    path = tmp_path_factory.mktemp(request.param)
    tiny_checkpoint(request.param, path)
    threads = torch.get_num_threads()
    # pools of the same pages, about three requests' worth: six of them preempt.
    # Each rank stores half of llama's two KV heads, and all of gemma2-mqa's one.
    per_rank = 24 * 1024 if request.param == "llama" else 48 * 1024
    one, two = _engine(path, 1, 48 * 1024), _engine(path, 2, per_rank)
    yield one, two
    two.close()
    torch.set_num_threads(threads)


def test_tp2_greedy_equals_tp1_with_hits_and_preemption(pair):
    one, two = pair
    assert isinstance(two.executor, TPExecutor)
    assert {g.spec.num_kv_heads for g in two.plan.groups} == {1}
    assert two.plan.num_large_pages == one.plan.num_large_pages
    assert _workload(two) == _workload(one)
    stats = two.stats()
    assert stats.hit_tokens >= 24 and stats.num_preemptions > 0
    assert stats.kv_used_bytes == 0
    two.manager.check_invariants()


def test_plan_and_simulate_with_tp_agree_with_the_engine_per_rank(pair):
    """`jenga plan --tp 2` and `simulate(tp=2)` build the very pool each
    rank of the engine holds, and the cost model moves that rank's bytes."""
    from jenga.commands.plan import compute
    from jenga.memory.shapes.hf import shape_from_path
    from jenga.sim.cost import CostModel
    from jenga.sim.gpus import get_gpu
    from jenga.sim.simulate import simulate
    from jenga.sim.trace import TraceRequest
    _, two = pair
    path, budget = str(two.model_path), two.config.kv_cache_memory
    rep = compute(path, tp=2, kv_bytes=budget, page_tokens=4, allocators="jenga")["plans"]["jenga"]
    assert (rep["large_page_bytes"], rep["num_large_pages"]) == (two.plan.large_page_bytes, two.plan.num_large_pages)
    assert [g["small_page_bytes"] for g in rep["groups"]] == [g.small_page_bytes for g in two.plan.groups]
    shape = shape_from_path(path)
    sim = simulate(shape, [TraceRequest(0.0, tuple(PROMPTS[0]), 4)], get_gpu("H100"), tp=2,
                   kv_budget_bytes=budget, page_tokens=4)
    assert (sim.kv_budget_bytes, sim.pool_bytes) == (budget, two.plan.pool_bytes)
    specs = {s.bytes_per_token for s, _ in CostModel(shape, two.plan, get_gpu("H100"), tp=2).specs}
    assert specs == {g.spec.bytes_per_token for g in two.plan.groups}


def test_lost_worker_fails_the_engine_and_leaves_no_process(pair, request):
    _, two = pair
    worker = two.tp_group.procs[0]
    for i, p in enumerate(PROMPTS):
        two.add_request(f"k{i}", p, GREEDY)
    two.step()
    hang = "gemma2" in request.node.callspec.id
    os.kill(worker.pid, signal.SIGSTOP if hang else signal.SIGKILL)
    t0 = time.monotonic()
    why = r"did not complete within 10 s \(a worker hangs" if hang else r"worker rank 1 \(pid \d+\) exited with code -9"
    with pytest.raises(EngineDead, match=why) as info:
        for _ in range(50):
            two.step()
    assert time.monotonic() - t0 < TIMEOUT_S + 15
    assert {o.outputs[0].finish_reason for o in info.value.outputs} == {"error"}
    assert not two.has_unfinished_requests()
    assert all(p.poll() is not None for p in two.tp_group.procs)
    with pytest.raises(EngineDead):
        two.executor.execute(two.scheduler.schedule())
