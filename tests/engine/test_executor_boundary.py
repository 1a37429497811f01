"""The one executor contract: every runner takes a StepPlan and returns a
StepResult; the engine has one step path, fails a step's requests when the
executor raises, gives up after repeated or fatal failures, and tells
observers about every step."""

import pytest
from engine_helpers import tiny_checkpoint

from jenga.engine.executor import MAX_CONSECUTIVE_FAILURES, EngineDead, StepFailed, is_fatal
from jenga.engine.llm_engine import LLMEngine
from jenga.engine.config import EngineConfig
from jenga.sched.executor import Executor, StepEvent
from jenga.sched.params import SamplingParams
from jenga.sched.step import StepPlan, StepResult

GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)


class Faulty:
    """Wraps an executor; raises on the steps listed in `fail_on` (1-based
    count of non-empty plans), or on every one with fail_on=None."""

    def __init__(self, inner, fail_on=(1,), err=RuntimeError("injected fault")):
        self.inner, self.fail_on, self.err, self.calls = inner, fail_on, err, 0

    def execute(self, plan):
        if plan.seqs:
            self.calls += 1
            if self.fail_on is None or self.calls in self.fail_on:
                self.failed = plan
                raise self.err
        return self.inner.execute(plan)

    def register_inputs(self, req_id, inputs):
        self.inner.register_inputs(req_id, inputs)

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    tiny_checkpoint("llama", path)
    return path


def engine(folder, **kw) -> LLMEngine:
    return LLMEngine(EngineConfig(model=str(folder), kv_cache_memory=1 << 20, cpu_threads=1, **kw))


def drain(e: LLMEngine) -> dict:
    final = {}
    while e.has_unfinished_requests():
        for out in e.step():
            if out.finished:
                final[out.request_id] = out
    return final


def test_every_runner_implements_the_contract(folder):
    from jenga.memory.shapes.presets import get_preset
    from jenga.memory.planner import build_plan
    from jenga.sim.gpus import get_gpu
    from jenga.sim.runner import SimRunner
    shape = get_preset("llama-3.1-8b")
    sim = SimRunner(shape, build_plan(shape, 1 << 30), get_gpu("H100"))
    e = engine(folder)
    for ex in (sim, e.runner, e.executor):
        assert isinstance(ex, Executor)
    assert isinstance(e.runner.execute(StepPlan(0, ())), StepResult)


def test_a_failed_step_fails_its_requests_and_the_engine_goes_on(folder):
    e = engine(folder)
    e.executor = Faulty(e.executor, fail_on=(2,))
    e.add_request("a", [5, 6, 7, 8], GREEDY)
    e.step()                                  # prefill of a
    e.add_request("b", [9, 10, 11], GREEDY)   # joins in the failing step
    with pytest.raises(StepFailed) as info:
        e.step()
    assert set(info.value.req_ids) == {"a", "b"}
    assert {o.request_id: o.outputs[0].finish_reason for o in info.value.outputs} == {"a": "error", "b": "error"}
    assert isinstance(info.value.__cause__, RuntimeError)
    e.manager.check_invariants()
    assert e.manager.usage().used_bytes == 0 and not e.has_unfinished_requests()
    e.add_request("c", [5, 6, 7, 8], GREEDY)
    out = drain(e)
    assert out["c"].outputs[0].finish_reason == "length" and len(out["c"].outputs[0].token_ids) == 4
    e.manager.check_invariants()


def test_requests_outside_the_failed_step_keep_running(folder):
    e = engine(folder, max_num_batched_tokens=4, enable_chunked_prefill=True)
    e.add_request("a", [5, 6, 7], GREEDY)
    e.step()                                  # a prefills alone (3 of 4 tokens)
    e.executor = Faulty(e.executor, fail_on=(1,))
    e.add_request("b", list(range(20, 40)), GREEDY)   # b's chunk and a's decode share the step
    with pytest.raises(StepFailed) as info:
        e.step()
    assert set(info.value.req_ids) == {"a", "b"}
    e.add_request("c", [5, 6, 7], GREEDY)
    assert drain(e)["c"].outputs[0].finish_reason == "length"


def test_repeated_failures_end_the_engine(folder):
    e = engine(folder)
    e.executor = Faulty(e.executor, fail_on=None)
    for i in range(MAX_CONSECUTIVE_FAILURES - 1):
        e.add_request(f"r{i}", [5, 6, 7], GREEDY)
        with pytest.raises(StepFailed):
            e.step()
    e.add_request("x", [5, 6, 7], GREEDY)
    with pytest.raises(EngineDead) as info:
        e.step()
    assert [o.request_id for o in info.value.outputs] == ["x"]
    assert not e.has_unfinished_requests() and e.manager.usage().used_bytes == 0


def test_a_device_error_is_fatal_at_once(folder):
    e = engine(folder)
    e.executor = Faulty(e.executor, err=RuntimeError("CUDA error: an illegal memory access was encountered"))
    e.add_request("a", [5, 6, 7], GREEDY)
    e.add_request("b", [8, 9], GREEDY)
    with pytest.raises(EngineDead):
        e.step()
    assert not e.has_unfinished_requests()
    assert is_fatal(MemoryError()) and not is_fatal(ValueError("bad plan"))


def test_observers_see_every_step(folder):
    e = engine(folder)
    events: list[StepEvent] = []
    e.add_step_observer(events.append)
    e.add_request("a", [5, 6, 7], GREEDY)
    drain(e)
    ran = [ev for ev in events if ev.plan.seqs]
    assert len(ran) == 4 == e.stats().num_steps          # one prefill (samples token 1), three decodes
    assert [tuple(ev.result.sampled) for ev in ran] == [("a",)] * 4
    assert ran[0].plan.seqs[0].token_ids == (5, 6, 7) and ran[0].num_running == 1
    assert all(ev.duration_s >= 0 for ev in events)


def test_outputs_carry_queue_prefill_and_decode_times(folder):
    e = engine(folder)
    e.add_request("a", [5, 6, 7], GREEDY)
    final = drain(e)["a"].metrics
    assert final.arrival_time <= final.first_scheduled_time <= final.first_token_time <= final.finish_time
    assert final.queue_time >= 0 and final.prefill_time >= 0 and final.decode_time >= 0


def test_a_failed_step_fails_a_parallel_sampling_request_whole(folder):
    """One child in the failing step fails every sibling: the user sees one
    request `p`, finished, every completion "error", and no page is held.
    The 40-token prompt makes the siblings wait for child 0's prefill, so
    only child 0 is in the failing step."""
    e = engine(folder)
    e.executor = Faulty(e.executor, fail_on=(1,))
    e.add_request("p", [(7 * i + 3) % 250 for i in range(40)], SamplingParams(max_tokens=4, temperature=0.0, n=3))
    with pytest.raises(StepFailed) as info:
        e.step()
    assert [s.req_id for s in e.executor.failed.seqs] == ["p#0"]      # the siblings were waiting
    assert info.value.req_ids == ("p",)
    [out] = info.value.outputs
    assert out.finished and [c.finish_reason for c in out.outputs] == ["error"] * 3
    assert not e.has_unfinished_requests() and e.manager.usage().used_bytes == 0
    e.manager.check_invariants()
