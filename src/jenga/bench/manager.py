"""`jenga bench manager`: CPU cost of the memory manager + scheduler per step.

N requests are prefilled (untimed), then `steps` decode steps are timed:
`schedule()` (admission, page allocation, StepPlan) and `update()` (commit,
prefix-cache publication, out-of-scope release) with a fixed sampled token,
so only our Python bookkeeping is measured — no model, no runner.  The
garbage collector stays on (its pauses are part of the cost) and the time
it takes during the timed steps is reported on its own.
"""

from __future__ import annotations

import gc
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..memory.manager import MemoryManager
from ..sched.config import SchedulerConfig
from ..sched.params import SamplingParams
from ..sched.request import Request
from ..sched.scheduler import Scheduler
from ..sched.step import StepResult


@dataclass(frozen=True)
class ManagerCost:
    """Mean per-step milliseconds: schedule() and update() in total, the
    memory manager's share of them (allocate, commit, page tables), and
    the garbage collector's pauses within schedule() and update()."""

    running: int
    steps: int
    schedule_ms: float
    update_ms: float
    manager_ms: float
    gc_ms: float = 0.0

    @property
    def step_ms(self) -> float:
        return self.schedule_ms + self.update_ms

    @property
    def us_per_request(self) -> float:
        return 1000.0 * self.step_ms / self.running


@contextmanager
def _gc_time():
    """Collect the seconds the garbage collector runs inside the block
    into the yielded list (one entry per collection)."""
    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(on_gc)


def _manager_only(sched, steps: int) -> float:
    """Seconds per step of exactly the manager calls a decode step makes
    (tick; allocate and page tables per request; commit after sampling),
    driven directly so nothing else is timed: the sampled token is
    appended to each request between the two timed loops."""
    mgr, reqs = sched.manager, list(sched.running)
    ids = [r.req_id for r in reqs]
    allocate, tables, commit = mgr.allocate, mgr.page_tables, mgr.commit
    total = 0.0
    for _ in range(steps):
        starts = [r.num_computed for r in reqs]
        t0 = time.perf_counter()
        mgr.tick()
        for rid, start in zip(ids, starts):
            allocate(rid, start, start + 1)
            tables(rid)
        t1 = time.perf_counter()
        for r in reqs:
            r.append_output(1)
            r.num_computed += 1
        t2 = time.perf_counter()
        for rid, start in zip(ids, starts):
            commit(rid, start + 1)
        total += t1 - t0 + time.perf_counter() - t2
    return total / steps


def measure(model: str, running: int, prompt_len: int = 512, steps: int = 50,
            allocator: str = "jenga") -> ManagerCost:
    """Mean per-step CPU time of schedule() and update() with `running`
    requests decoding (see module doc)."""
    from ..commands.common import resolve_shape
    from ..memory.footprint import ideal_bytes
    from ..memory.planner import build_plan

    shape = resolve_shape(model)
    # early requests decode while later ones prefill: leave them room to
    # still be running when the timed steps start
    warmup = running * prompt_len // max(8192, running) + 16
    context = prompt_len + warmup + 2 * steps + 16
    probe = build_plan(shape, 1 << 40, allocator="jenga")
    budget = int(ideal_bytes(probe, context, 0) * running * 1.5) + 64 * probe.large_page_bytes
    plan = build_plan(shape, budget, allocator=allocator)
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=max(8192, running), max_num_seqs=running),
                      MemoryManager(plan), max_model_len=shape.max_context)
    params = SamplingParams(max_tokens=warmup + 2 * steps + 16, ignore_eos=True)
    for i in range(running):
        sched.add_request(Request(f"r{i}", [(i * 7919 + j) % 32000 for j in range(prompt_len)], params))

    def one_step() -> tuple[float, float]:
        t0 = time.perf_counter()
        plan_ = sched.schedule()
        t1 = time.perf_counter()
        sched.update(plan_, StepResult({s.req_id: (1,) for s in plan_.seqs if s.sample}))
        return t1 - t0, time.perf_counter() - t1

    while any(r.num_output == 0 for r in sched.requests.values()):
        one_step()
    if len(sched.running) != running:
        raise RuntimeError(f"only {len(sched.running)} of {running} requests run: {sched.stats}")
    with _gc_time() as pauses:
        timings = [one_step() for _ in range(steps)]
    manager_s = _manager_only(sched, steps)
    return ManagerCost(running, steps, 1000 * sum(t[0] for t in timings) / steps,
                       1000 * sum(t[1] for t in timings) / steps, 1000 * manager_s, 1000 * sum(pauses) / steps)


def main(args) -> int:
    counts = [int(x) for x in str(args.running).split(",") if x]
    rows = [measure(args.model, n, args.prompt_len, args.steps, args.allocator) for n in counts]
    if args.json:
        print(json.dumps([{**asdict(r), "step_ms": r.step_ms, "us_per_request": r.us_per_request}
                          for r in rows], indent=2))
        return 0
    print(f"manager + scheduler CPU cost per decode step ({args.model}, {args.allocator}, "
          f"prompt {args.prompt_len}, {args.steps} steps)")
    print(f"{'running':>8} {'schedule ms':>12} {'update ms':>10} {'step ms':>9} {'us/request':>11} "
          f"{'manager ms':>11} {'gc ms':>7}")
    for r in rows:
        print(f"{r.running:>8} {r.schedule_ms:>12.3f} {r.update_ms:>10.3f} {r.step_ms:>9.3f} "
              f"{r.us_per_request:>11.2f} {r.manager_ms:>11.3f} {r.gc_ms:>7.3f}")
    return 0
