"""The engine's side of the executor boundary: choosing the executor, and
what a failed step becomes.

`build_executor` picks the one executor an LLMEngine drives: the local
ModelRunner, the SpecRunner when a draft model is configured (and, with
tensor parallelism, the TP executor).  The engine calls only the contract
of sched/executor.py on it.

When `execute` raises, the engine ends the plan's requests with
finish_reason "error" (their pages go back to the pool) and raises
`StepFailed`, which carries their final outputs, so a server can answer
those clients and go on serving the others.  `EngineDead` means the engine
cannot go on: the same failure repeated, or the device or a worker failed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .outputs import RequestOutput

# consecutive failed steps after which the engine gives up (EngineDead)
MAX_CONSECUTIVE_FAILURES = 3


class StepFailed(RuntimeError):
    """A step's executor raised.  req_ids: the requests of the failed step,
    now finished with "error"; outputs: their final RequestOutputs (in
    req_ids order); cause: the executor's exception (also __cause__)."""

    def __init__(self, req_ids: Sequence[str], outputs: Sequence[RequestOutput], cause: BaseException) -> None:
        super().__init__(f"step failed for {len(req_ids)} request(s): {type(cause).__name__}: {cause}")
        self.req_ids = tuple(req_ids)
        self.outputs = tuple(outputs)
        self.cause = cause


class EngineDead(RuntimeError):
    """The engine cannot serve any more (repeated step failures, a device
    error, a lost tensor-parallel worker); every request was failed.
    outputs: the final outputs of the requests it failed."""

    def __init__(self, message: str, outputs: Sequence[RequestOutput] = ()) -> None:
        super().__init__(message)
        self.outputs = tuple(outputs)


def is_fatal(err: BaseException) -> bool:
    """True for failures no retry survives: EngineDead (a lost worker),
    host memory exhaustion, or a device error (torch raises CUDA errors as
    RuntimeErrors starting "CUDA error", and out-of-memory as its own type)."""
    device_errors = tuple(t for t in (getattr(torch, "AcceleratorError", None),
                                      getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if isinstance(err, (EngineDead, MemoryError) + device_errors):
        return True
    return isinstance(err, RuntimeError) and str(err).startswith("CUDA error")
