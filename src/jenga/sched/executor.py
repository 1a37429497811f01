"""The executor contract, and the step event observers subscribe to.

Everything that runs a step is an *executor*: the simulated runner
(sim/runner.py), the local model runner (engine/runner.py), the speculative
runner (engine/spec_runner.py) and the tensor-parallel executor
(engine/tp_executor.py).  An executor takes one frozen `StepPlan` and returns
one `StepResult`; sampling happens behind it, so the scheduler sees tokens
only.  Per-request inputs that cannot travel in a plan (an image's pixels)
reach the executor through `register_inputs` before the first plan that
names the request; `plan.finished` tells the executor when to forget them
(and any other per-request state, such as a seeded sampler's generator).

`StepEvent` is what an engine or the simulator tells its observers after
each step; benchmarks and metrics subscribe to it instead of subclassing or
patching the engine.  Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .step import StepPlan, StepResult


@runtime_checkable
class Executor(Protocol):
    """Runs steps.  `execute` may raise; the engine then fails the plan's
    requests (see engine.executor.StepFailed) and goes on."""

    def execute(self, plan: StepPlan) -> StepResult:
        """Run (or cost) `plan`: apply its copies and zeros, compute its
        tokens, sample where `sample` is set; returns the sampled tokens and
        the step's counts.  Drops the state of `plan.finished` requests."""
        ...

    def register_inputs(self, req_id: str, inputs: Sequence[Any]) -> None:
        """Hand over per-request inputs (images) before the request's first
        step; an executor that needs none ignores them."""
        ...

    def close(self) -> None:
        """Release processes and devices; idempotent."""
        ...


class StepEvent(NamedTuple):
    """One finished step, as observers see it.

    plan / result: what ran and what came back (result is empty for a step
    with nothing to run).  num_running / num_waiting: the scheduler's queues
    after the plan was made; waiting_for_memory: a waiting request was held
    back by memory in this step.  duration_s: wall time of schedule +
    execute + update (simulated time in the simulator).
    """

    plan: StepPlan
    result: StepResult
    num_running: int
    num_waiting: int
    waiting_for_memory: bool
    duration_s: float
