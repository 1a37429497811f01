"""`jenga bench manager`: CPU cost of the memory manager + scheduler per step.

N requests are prefilled (untimed), then `steps` decode steps are timed:
`schedule()` (admission, page allocation, StepPlan) and `update()` (commit,
prefix-cache publication, out-of-scope release) with a fixed sampled token,
so only our Python bookkeeping is measured — no model, no runner.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from ..memory.manager import MemoryManager
from ..sched.config import SchedulerConfig
from ..sched.params import SamplingParams
from ..sched.request import Request
from ..sched.scheduler import Scheduler
from ..sched.step import StepResult


@dataclass(frozen=True)
class ManagerCost:
    """Mean per-step milliseconds: schedule() and update() in total, and
    the memory manager's share of them (allocate, commit, page tables)."""

    running: int
    steps: int
    schedule_ms: float
    update_ms: float
    manager_ms: float

    @property
    def step_ms(self) -> float:
        return self.schedule_ms + self.update_ms

    @property
    def us_per_request(self) -> float:
        return 1000.0 * self.step_ms / self.running


def _manager_only(sched, steps: int) -> float:
    """Seconds per step of exactly the manager calls a decode step makes
    (tick; allocate and page tables per request; commit after sampling),
    driven directly so nothing else is timed."""
    mgr, reqs = sched.manager, list(sched.running)
    t0 = time.perf_counter()
    for _ in range(steps):
        mgr.tick()
        for r in reqs:
            mgr.allocate(r.req_id, r.num_computed, r.num_computed + 1)
            mgr.page_tables(r.req_id)
        for r in reqs:
            r.append_output(1)
            r.num_computed += 1
            mgr.commit(r.req_id, r.num_computed)
    return (time.perf_counter() - t0) / steps


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
    timings = [one_step() for _ in range(steps)]
    manager_s = _manager_only(sched, steps)
    return ManagerCost(running, steps, 1000 * sum(t[0] for t in timings) / steps,
                       1000 * sum(t[1] for t in timings) / steps, 1000 * manager_s)


def main(args) -> int:
    counts = [int(x) for x in str(args.running).split(",") if x]
    rows = [measure(args.model, n, args.prompt_len, args.steps, args.allocator) for n in counts]
    if args.json:
        print(json.dumps([{**asdict(r), "step_ms": r.step_ms, "us_per_request": r.us_per_request}
                          for r in rows], indent=2))
        return 0
    print(f"manager + scheduler CPU cost per decode step ({args.model}, {args.allocator}, "
          f"prompt {args.prompt_len}, {args.steps} steps)")
    print(f"{'running':>8} {'schedule ms':>12} {'update ms':>10} {'step ms':>9} {'us/request':>11} {'manager ms':>11}")
    for r in rows:
        print(f"{r.running:>8} {r.schedule_ms:>12.3f} {r.update_ms:>10.3f} {r.step_ms:>9.3f} "
              f"{r.us_per_request:>11.2f} {r.manager_ms:>11.3f}")
    return 0
