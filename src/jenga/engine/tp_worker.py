"""A tensor-parallel worker: ranks 1..N-1 of an engine's group.

`python -m jenga.engine.tp_worker` is what the engine spawns on one node
(with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and JENGA_TP_DRIVER_PID in
its environment) and what `torchrun` starts on several: there rank 0 runs
the `jenga` command line given after the module (the driver: it spawns
nothing) and every other rank serves as a worker.

A worker does what the driver's messages say, in order (tp_comm.py):
("load", WorkerSetup) builds and loads its shard of the model; ("plan",
MemoryPlan) builds its KV pool in the same page-first layout as every
rank and answers with a barrier; ("inputs", req_id, inputs) registers a
request's images; ("step", StepPlan) runs the forward (its all-reduces meet
the driver's); ("close",) ends it.  A step the model refuses (ValueError:
every rank refuses the same plan alike) is skipped; any other error is
written to the store and ends the worker, which the driver reports.  A
worker whose driver is gone exits within a second (parent-death watch),
so none is left behind.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass

DRIVER_PID = "JENGA_TP_DRIVER_PID"
STARTUP_TIMEOUT_S = 600.0   # how long ranks wait for each other to join


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to load its shard: the model folder, the
    compute dtype name, the device type ("cpu" / "cuda"), torch's CPU
    threads, the attention backend and the step timeout."""

    model_path: str
    dtype: str
    device: str
    cpu_threads: int | None
    backend: str
    timeout_s: float


def _watch_driver(pid: int) -> None:
    """Exit when the process that spawned us is gone (re-parented)."""
    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(0.2)
        os._exit(3)
    threading.Thread(target=watch, name="jenga-tp-parent-watch", daemon=True).start()


def device_for(kind: str) -> "torch.device":
    """This rank's device: cuda:LOCAL_RANK on CUDA, else the CPU."""
    import torch
    if kind == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class Worker:
    """One worker rank's model, pool and runner (built from messages)."""

    def __init__(self, ranks) -> None:
        self.ranks, self.model, self.runner = ranks, None, None

    def load(self, setup: WorkerSetup) -> None:
        import torch

        from ..model.loader import load_model
        self.setup, self.device = setup, device_for(setup.device)
        self.ranks.open_model_group(setup.device, setup.timeout_s)
        if setup.cpu_threads is not None and self.device.type == "cpu":
            torch.set_num_threads(setup.cpu_threads)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model = load_model(setup.model_path, self.device, getattr(torch, setup.dtype), self.ranks.shard)

    def build(self, plan) -> None:
        from ..model.kv_pool import KVPool
        from .runner import ModelRunner
        self.runner = ModelRunner(self.model, KVPool(plan, device=self.device), plan, backend=self.setup.backend)

    def step(self, plan) -> None:
        self.runner.forget(plan.finished)
        try:
            self.runner.forward(plan)
        except ValueError:
            pass   # the driver refused the same plan before any collective


def serve(ranks) -> None:
    """The worker loop (module doc); returns on ("close",)."""
    from . import tp_comm
    worker = Worker(ranks)
    while True:
        msg = tp_comm.recv(ranks)
        kind = msg[0]
        if kind == "close":
            return
        if kind == "load":
            worker.load(msg[1])
        elif kind == "plan":
            worker.build(msg[1])
            tp_comm.barrier(ranks).wait()
        elif kind == "inputs":
            worker.runner.register_inputs(msg[1], msg[2])
        elif kind == "step":
            worker.step(msg[1])
        else:
            raise ValueError(f"unknown message {kind!r} from the driver")


def main(argv: list[str] | None = None) -> int:
    """Entry point: a worker rank serves; under torchrun, rank 0 runs the
    `jenga` command line `argv` as the driver."""
    argv = sys.argv[1:] if argv is None else argv
    rank = int(os.environ.get("RANK", "-1"))
    if rank == 0:
        from ..cli import main as cli_main
        return cli_main(argv) or 0
    if rank < 1:
        print("jenga.engine.tp_worker: RANK is not set; run it under torchrun or let the engine spawn it",
              file=sys.stderr)
        return 2
    if DRIVER_PID in os.environ:
        _watch_driver(int(os.environ[DRIVER_PID]))
    from . import tp_comm
    ranks = tp_comm.join(STARTUP_TIMEOUT_S)
    try:
        serve(ranks)
    except BaseException as err:   # report why, then die: the driver fails the engine
        try:
            ranks.store.set(tp_comm.error_key(rank), f"{type(err).__name__}: {err}\n{traceback.format_exc()}")
        except Exception:
            pass
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
