"""SimRunner: executes a StepPlan by costing it instead of running a model.

It is an executor (sched/executor.py), interchangeable with the torch
runner at the step boundary: it takes
the same frozen `StepPlan` and returns a `StepResult` whose `duration_s` is
the roofline cost model's time and whose tokens are deterministic: the token
at position p of request r is `sim_token(r, p)`, whatever the batch, so runs
are reproducible and a workload can predict a request's output (multi-turn
sessions replay earlier answers, so their prompts hit the prefix cache).
Simulated requests run with `ignore_eos` and a fixed `max_tokens`, as in the
paper's experiments.
"""

from __future__ import annotations

import zlib

from ..memory.plan import MemoryPlan
from ..memory.spec import ModelShape
from ..sched.step import StepPlan, StepResult
from .cost import CostModel, CostParams, StepCost
from .gpus import GPUSpec

# Simulated tokens avoid the lowest ids, where tokenizers keep bos/eos/pad.
TOKEN_LOW = 16
DEFAULT_VOCAB = 32000


def sim_token(req_id: str, position: int, vocab_size: int = DEFAULT_VOCAB) -> int:
    """The token a simulated request `req_id` produces at `position`: a hash
    of both, in [TOKEN_LOW, vocab_size)."""
    if vocab_size <= TOKEN_LOW:
        raise ValueError(f"vocab_size must be > {TOKEN_LOW}, got {vocab_size}")
    h = zlib.crc32(f"{req_id}\x00{position}".encode())
    return TOKEN_LOW + h % (vocab_size - TOKEN_LOW)


class SimRunner:
    """Costs each StepPlan with `CostModel` (see cost.py).

    `last_cost` keeps the latest step's StepCost for reports and tests.
    Draft-model proposals (speculative decoding) are not simulated: a plan
    with draft tokens is refused with ValueError.
    """

    def __init__(self, shape: ModelShape, plan: MemoryPlan, gpu: GPUSpec,
                 cost_params: CostParams = CostParams(), *, tp: int = 1,
                 vocab_size: int = DEFAULT_VOCAB) -> None:
        sim_token("", 0, vocab_size)   # validates vocab_size
        self.model = CostModel(shape, plan, gpu, cost_params, tp)
        self.vocab_size = vocab_size
        self.last_cost: StepCost | None = None

    def execute(self, plan: StepPlan) -> StepResult:
        """Cost `plan`; sample one token for every sequence with `sample`
        set.  Mutates only `last_cost`."""
        cost = self.model.step(plan)
        self.last_cost = cost
        sampled: dict[str, tuple[int, ...]] = {}
        encoder_runs = 0
        for seq in plan.seqs:
            if seq.num_spec:
                raise ValueError(f"request {seq.req_id!r}: the simulator does not run draft models "
                                 "(num_speculative_tokens must be 0)")
            encoder_runs += len(seq.encoder_runs)
            if seq.sample:
                sampled[seq.req_id] = (sim_token(seq.req_id, seq.end, self.vocab_size),)
        return StepResult(sampled, cost.duration_s, encoder_runs)

    def register_inputs(self, req_id: str, inputs) -> None:
        """Images are costed from the plan's ImageRefs; their pixels are not needed."""

    def close(self) -> None:
        """Nothing to release."""
