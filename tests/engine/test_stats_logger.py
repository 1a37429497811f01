"""The periodic stats line: throughput over the interval, queues, KV use per
group, hit rate and preemptions; silent while idle."""

import pytest
from engine_helpers import tiny_checkpoint

from jenga.engine.config import EngineConfig
from jenga.engine.llm_engine import LLMEngine
from jenga.engine.stats_logger import StatsLogger
from jenga.sched.params import SamplingParams


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_one_line_per_busy_interval(tmp_path):
    tiny_checkpoint("gemma2", tmp_path)
    e = LLMEngine(EngineConfig(model=str(tmp_path), kv_cache_memory=1 << 20, cpu_threads=1))
    clock, lines = Clock(), []
    e.add_step_observer(StatsLogger(e, interval_s=10.0, clock=clock, emit=lines.append))
    e.add_request("a", list(range(5, 25)), SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True))
    e.step()                       # 20 prompt tokens, 1 generated
    clock.t = 4.0
    e.step()                       # 1 generated
    assert lines == []
    clock.t = 10.0
    e.step()                       # 1 generated, the request ends; 10 s passed: one line
    assert len(lines) == 1
    assert lines[0].startswith("Avg prompt throughput: 2.0 tokens/s, Avg generation throughput: 0.3 tokens/s, "
                               "Running: 0 reqs, Waiting: 0 reqs, KV cache usage: 0.0% (sliding(window=8) 0.0%, "
                               "full 0.0%), Prefix cache hit rate: 0.0%, Preemptions: 0")
    clock.t = 30.0
    e.step()                       # idle: nothing to say
    assert len(lines) == 1
    with pytest.raises(ValueError, match="interval_s"):
        StatsLogger(e, interval_s=0)
