"""The tensor-parallel executor: the driver (rank 0) and its workers.

`TPGroup.start(size, ...)` makes the process group.  On one node it spawns
`size - 1` worker processes (`python -m jenga.engine.tp_worker`) on a
TCPStore of its own; under torchrun (RANK=0 and WORLD_SIZE in the
environment) the workers were started by torchrun and it only joins them.
The driver then loads its own shard like every worker (`load`), and the
engine plans memory once, per rank, for all of them.

`TPExecutor` is the executor the engine drives (sched/executor.py): one
scheduler and one MemoryManager in the driver, and every rank's KV pool in
the same page-first layout, so the frozen StepPlan goes to every worker
unchanged (a pickle on the control group) and the driver then runs its own
shard of the same forward; the all-reduces inside the forward keep the
ranks in step.  Only the driver has an LM head and a sampler.  A lost
worker (exit, kill) or a hung collective (the step timeout) ends the engine
with EngineDead naming the rank and its error; `close()` ends every
worker, and workers also die with the driver (tp_worker.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from ..memory.plan import MemoryPlan
from ..model.parallel import TPShard
from ..sched.step import StepPlan, StepResult
from . import tp_comm
from .executor import EngineDead
from .runner import ModelRunner
from .tp_worker import DRIVER_PID, STARTUP_TIMEOUT_S, WorkerSetup

_log = logging.getLogger("jenga.tp")
CLOSE_GRACE_S = 5.0   # how long close() waits for a worker to leave before killing it


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (it sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ


def _kill(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait()


class TPGroup:
    """The driver's side of the group: its Ranks and (on one node) the
    worker processes.  Use `start`."""

    def __init__(self, ranks: tp_comm.Ranks, procs: list[subprocess.Popen], timeout_s: float) -> None:
        self.ranks, self.procs, self.timeout_s = ranks, procs, timeout_s
        self.closed = False
        # workers never outlive this object, even without close()
        self._finalizer = weakref.finalize(self, _kill, procs)

    @classmethod
    def start(cls, size: int, timeout_s: float) -> "TPGroup":
        """Spawn (or, under torchrun, join) `size - 1` workers; returns
        once every rank joined.  Raises EngineDead when a worker dies or
        does not join within STARTUP_TIMEOUT_S, ValueError when torchrun's
        WORLD_SIZE is not `size`."""
        if launched_by_torchrun():
            if int(os.environ["WORLD_SIZE"]) != size or os.environ["RANK"] != "0":
                raise ValueError(f"tensor_parallel_size={size} but torchrun started rank {os.environ['RANK']} "
                                 f"of WORLD_SIZE={os.environ['WORLD_SIZE']}; they must agree")
            return cls(tp_comm.join(STARTUP_TIMEOUT_S), [], timeout_s)
        store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                              timeout=timedelta(seconds=STARTUP_TIMEOUT_S))
        src = str(Path(__file__).resolve().parents[2])   # the jenga the driver runs, for the workers too
        base = {**os.environ, "WORLD_SIZE": str(size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
                DRIVER_PID: str(os.getpid()),
                "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
        procs = [subprocess.Popen([sys.executable, "-m", "jenga.engine.tp_worker"], stdin=subprocess.DEVNULL,
                                  env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(1, size)]
        group = cls(tp_comm.Ranks(0, size, store, None), procs, timeout_s)
        group._await_joined(size)
        group.ranks = tp_comm.join(STARTUP_TIMEOUT_S, store, rank=0, size=size)
        return group

    def _await_joined(self, size: int) -> None:
        keys = [tp_comm.joined_key(r) for r in range(1, size)]
        end = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.ranks.store.check(keys):
            lost = self.lost()
            if lost or time.monotonic() > end:
                self.close()
                raise EngineDead(lost or f"tensor-parallel workers did not start within {STARTUP_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    @property
    def shard(self) -> TPShard:
        return self.ranks.shard

    def lost(self) -> str | None:
        """A sentence naming the first worker that exited, with its
        reported error; None while all run (always None under torchrun,
        whose workers the driver cannot watch: their collectives fail)."""
        for rank, p in enumerate(self.procs, start=1):
            code = p.poll()
            if code is not None:
                return f"tensor-parallel worker rank {rank} (pid {p.pid}) exited with code {code}" + \
                    self._reported(rank)
        return None

    def _reported(self, rank: int) -> str:
        key = tp_comm.error_key(rank)
        try:
            if self.ranks.store.check([key]):
                return ": " + self.ranks.store.get(key).decode(errors="replace").splitlines()[0]
        except Exception:   # the store itself may be gone
            pass
        return ""

    def send(self, message, deadline_s: float | None = None) -> None:
        """Broadcast `message` to the workers; EngineDead when one is lost."""
        try:
            tp_comm.send(self.ranks, message, self.timeout_s if deadline_s is None else deadline_s, self.lost)
        except (tp_comm.LostRank, RuntimeError) as err:
            raise self.dead(err) from err

    def load(self, setup: WorkerSetup) -> None:
        """Tell the workers to load their shards, and open the model group."""
        self.send(("load", setup), STARTUP_TIMEOUT_S)
        self.ranks.open_model_group(setup.device, setup.timeout_s)

    def build(self, plan: MemoryPlan) -> None:
        """Send the per-rank plan; returns when every worker built its pool."""
        self.send(("plan", plan), STARTUP_TIMEOUT_S)
        try:
            tp_comm.wait_for(tp_comm.barrier(self.ranks), STARTUP_TIMEOUT_S, self.lost)
        except (tp_comm.LostRank, RuntimeError) as err:
            raise self.dead(err) from err

    def dead(self, err: BaseException) -> EngineDead:
        """The EngineDead for a communication failure `err`: names a lost
        worker when there is one; ends the group."""
        time.sleep(0.2)   # a worker that just died: let it be seen as exited
        why = self.lost() or (f"a collective or message did not complete within {self.timeout_s:g} s "
                              f"(a worker hangs or the network failed): {type(err).__name__}: {err}")
        self.close(graceful=False)
        return EngineDead(f"tensor-parallel group failed: {why}")

    def close(self, graceful: bool = True) -> None:
        """End every worker (a "close" message, then kill after
        CLOSE_GRACE_S); idempotent."""
        if self.closed:
            return
        self.closed = True
        if graceful and not self.lost():
            try:
                tp_comm.send(self.ranks, ("close",), CLOSE_GRACE_S, self.lost)
            except (tp_comm.LostRank, RuntimeError):
                pass
        end = time.monotonic() + (CLOSE_GRACE_S if graceful else 0.0)
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self._finalizer()


class TPExecutor:
    """The executor over a TPGroup and the driver's ModelRunner (its shard
    with the LM head and the sampler); see module doc."""

    def __init__(self, group: TPGroup, runner: ModelRunner) -> None:
        self.group, self.runner = group, runner
        self.images = runner.images
        group.build(runner.plan)

    def execute(self, plan: StepPlan) -> StepResult:
        """Send `plan` to the workers, run the driver's shard and sample.
        Raises ValueError as ModelRunner does (every rank refused the plan
        alike, the engine goes on) and EngineDead when a worker is lost or
        a collective timed out."""
        if self.group.closed:
            raise EngineDead("tensor-parallel group is closed")
        self.group.send(("step", plan))
        try:
            return self.runner.execute(plan)
        except ValueError:
            raise
        except Exception as err:   # a collective failed: the ranks cannot resynchronise
            raise self.group.dead(err) from err

    def register_inputs(self, req_id: str, inputs) -> None:
        """Register images on the driver (ValueError for a text model) and
        on every worker."""
        self.runner.register_inputs(req_id, inputs)
        if inputs:
            self.group.send(("inputs", req_id, tuple(inputs)))

    def close(self) -> None:
        self.group.close()
