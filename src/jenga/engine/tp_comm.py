"""The tensor-parallel process group: rendezvous, two process groups, and
the message channel from the driver (rank 0) to the workers.

Every rank joins through `torch.distributed`'s env:// rendezvous (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT: set by the engine for the workers it
spawns, or by torchrun).  On the store it builds two process groups, owned
by the `Ranks` object rather than registered as torch's default group, so
several engines can live in one process one after another:

- `model`: the all-reduces of the forward (gloo on CPU, NCCL on CUDA),
  with the step timeout: a rank that hangs fails the step within it;
- `control`: gloo, the driver's messages.  A worker waits on it for the
  next step for as long as the engine idles, so its own timeout is long;
  the driver never blocks on it: it polls each send until done, a worker
  died, or the step timeout passed.

A message is one length-prefixed pickle: an int64 length, then the bytes
as a uint8 tensor, two broadcasts from rank 0.  Workers report a fatal
error by writing it to the store under `error_key(rank)` before exiting, so
the driver can say why it lost them.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..model.parallel import TPShard

IDLE_TIMEOUT = timedelta(days=365)   # a worker waits this long for the next message


def error_key(rank: int) -> str:
    return f"jenga/tp/error/{rank}"


def joined_key(rank: int) -> str:
    return f"jenga/tp/joined/{rank}"


class LostRank(RuntimeError):
    """A send to the workers did not complete: one died or hangs."""


@dataclass
class Ranks:
    """This process's membership: rank of size, the store, both groups
    (`model` is None until `open_model_group`)."""

    rank: int
    size: int
    store: Any
    control: Any
    model: Any = None

    @property
    def shard(self) -> TPShard:
        return TPShard(self.rank, self.size, self.model)

    def open_model_group(self, device_type: str, timeout_s: float) -> None:
        """Every rank calls this once, after the driver's "load" message said
        the device: NCCL on CUDA, else gloo, with the step timeout."""
        timeout, store = timedelta(seconds=timeout_s), dist.PrefixStore("jenga/model", self.store)
        if device_type == "cuda":
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.model = dist.ProcessGroupNCCL(store, self.rank, self.size, opts)
        else:
            self.model = dist.ProcessGroupGloo(store, self.rank, self.size, timeout)


def join(timeout_s: float, store=None, rank: int | None = None, size: int | None = None) -> Ranks:
    """Join the group and open the control group: through the env://
    variables, or on `store` (the driver's own TCPStore when it spawned the
    workers) as `rank` of `size`.  Blocks until every rank has joined (at
    most `timeout_s`)."""
    timeout = timedelta(seconds=timeout_s)
    if store is None:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store, rank, size = next(dist.rendezvous("env://", rank, size, timeout=timeout))
        store.set(joined_key(rank), "1")
    store.set_timeout(timeout)
    control = dist.ProcessGroupGloo(dist.PrefixStore("jenga/control", store), rank, size, IDLE_TIMEOUT)
    return Ranks(rank, size, store, control)


def _broadcast(group, tensor: torch.Tensor):
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def send(ranks: Ranks, message: Any, deadline_s: float, alive: Callable[[], str | None]) -> None:
    """Driver: broadcast `message` to every worker.  Polls each broadcast;
    raises LostRank when `alive()` names a lost worker or `deadline_s`
    seconds pass first."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    header = torch.tensor([len(data)], dtype=torch.int64)
    payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    end = time.monotonic() + deadline_s
    for tensor in (header, payload):
        _await(_broadcast(ranks.control, tensor), end, alive)


def wait_for(work, deadline_s: float, alive: Callable[[], str | None]) -> None:
    """Driver: wait for `work` (a collective of every rank), as `send`."""
    _await(work, time.monotonic() + deadline_s, alive)


def _await(work, end: float, alive: Callable[[], str | None]) -> None:
    pause = 1e-5
    while not work.is_completed():
        lost = alive()
        if lost:
            raise LostRank(lost)
        if time.monotonic() > end:
            raise LostRank("a worker did not take the driver's message in time (it hangs)")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
    work.wait()


def recv(ranks: Ranks) -> Any:
    """Worker: the driver's next message (blocks while the engine idles;
    raises when the driver is gone)."""
    header = torch.zeros(1, dtype=torch.int64)
    _broadcast(ranks.control, header).wait()
    payload = torch.empty(int(header.item()), dtype=torch.uint8)
    _broadcast(ranks.control, payload).wait()
    return pickle.loads(payload.numpy().tobytes())


def barrier(ranks: Ranks):
    """An all-reduce of one int on the control group (every rank calls it);
    returns the Work, which the driver polls like a send."""
    return ranks.control.allreduce([torch.ones(1, dtype=torch.int64)])
