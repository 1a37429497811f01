"""simulate(): replay a workload through the real scheduler and memory
manager, with the roofline runner in place of a model.

The loop is an engine's loop on a simulated clock: add the requests that
have arrived, `schedule()`, cost the plan (`SimRunner`), advance the clock
by the step's time, `update()`.  When nothing runs or waits the clock jumps
to the next arrival.  Only the memory plan changes between allocators, so
differences in throughput come from how many requests memory admits.
`compare()` runs several allocators on the same requests.  Utilisation is
measured by sim/saturation.py: true need (the jenga plan's policies, the
same for every allocator) over pool bytes, at the instant memory first
refused something in a step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..memory.footprint import TrueNeed
from ..memory.manager import MemoryManager
from ..memory.plan import MemoryPlan
from ..memory.spec import ModelShape
from ..sched.config import SchedulerConfig
from ..sched.params import SamplingParams
from ..sched.request import FinishReason, Request
from ..sched.scheduler import Scheduler
from ..sched.step import StepResult
from .cost import CostParams
from .gpus import GPUSpec
from .runner import SimRunner
from .saturation import PoolObserver, PoolSample, SaturationSummary
from .trace import TraceRequest


@dataclass(frozen=True)
class SimSeries:
    """Per step: clock after the step, bytes in pages held per group, bytes
    the layers truly need (TrueNeed, right after scheduling: the step's
    peak), and the number of sequences in the step."""

    group_labels: tuple[str, ...]
    times: tuple[float, ...]
    used_bytes: tuple[tuple[int, ...], ...]
    needed_bytes: tuple[int, ...]
    batch: tuple[int, ...]


@dataclass(frozen=True)
class SimReport:
    """What one simulated run measured (see docs/cost-model.md).

    finished: requests that ran to their output length; rejected: refused
    at admission (longer than the context or the pool); errored: ended by
    the scheduler because they could never fit.  Utilisation is true need
    / pool bytes sampled when memory first refused in a step
    (sim/saturation.py).  mem_util: its mean over memory-bound steps (a
    running request's allocation failed, or admission was refused with
    fewer free bytes than asked); when there were none, the mean over all
    steps after scheduling and `saturated` is False.  `saturation` has the
    other means (at failed allocations only, the allocator's own count,
    bytes held, page rounding) and step counts.  mean_decode_batch: mean
    number of decoding sequences over steps that decode.  encoder_runs:
    images encoded (re-runs included).  Latency means are None when no
    request defines them.  Under tensor parallelism kv_budget_bytes and
    pool_bytes are one rank's (every rank holds the same pool).
    """

    allocator: str
    model: str
    gpu: str
    tp: int
    kv_budget_bytes: int
    pool_bytes: int
    num_requests: int
    finished: int
    rejected: int
    errored: int
    output_tokens: int
    duration_s: float
    steps: int
    mem_util: float
    saturated: bool
    saturation: SaturationSummary
    mean_decode_batch: float
    prefix_hit_rate: float
    preemptions: int
    encoder_runs: int
    mean_ttft_s: float | None
    mean_tpot_s: float | None
    mean_latency_s: float | None
    series: SimSeries = field(repr=False)

    @property
    def throughput_rps(self) -> float:
        return self.finished / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def throughput_tps(self) -> float:
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict:
        """The scalar results, JSON-ready (no time series)."""
        out = {k: v for k, v in self.__dict__.items() if k != "series"}
        out.update(saturation=asdict(self.saturation), throughput_rps=self.throughput_rps,
                   throughput_tps=self.throughput_tps)
        return out


def default_kv_budget(shape: ModelShape, gpu: GPUSpec, tp: int = 1, gpu_memory_utilization: float = 0.9) -> int:
    """KV bytes of one of `tp` GPUs (one rank's pool): its memory x
    utilisation, less its 1/tp of the weights.  Raises ValueError naming the
    model when the weights leave nothing."""
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    budget = int(gpu.memory_bytes * gpu_memory_utilization - shape.weights_bytes / tp)
    if budget <= 0:
        raise ValueError(f"model {shape.name!r} ({shape.weights_bytes / 1e9:.1f} GB of weights) leaves no KV "
                         f"memory on {tp} x {gpu.name}; raise tp or pass kv_budget_bytes")
    return budget


class _Recorder:
    """Per-step measurements and per-request latencies of one run."""

    def __init__(self, plan: MemoryPlan) -> None:
        self.labels = tuple(g.spec.describe() for g in plan.groups)
        self.times: list[float] = []
        self.used: list[tuple[int, ...]] = []
        self.needed: list[int] = []
        self.batch: list[int] = []
        self.util_all: list[float] = []
        self.samples: list[PoolSample] = []
        self.decode_batches: list[int] = []
        self.first: dict[str, float] = {}
        self.ttft: list[float] = []
        self.tpot: list[float] = []
        self.latency: list[float] = []
        self.finished = self.errored = self.output_tokens = self.encoder_runs = 0

    def step(self, clock: float, observer: PoolObserver, plan) -> None:
        usage, need = observer.manager.usage(), sum(observer.need())
        self.util_all.append(need / usage.pool_bytes)
        if observer.sample is not None:
            self.samples.append(observer.sample)
        decoding = sum(1 for s in plan.seqs if s.start >= s.prompt_len)
        if decoding:
            self.decode_batches.append(decoding)
        self.times.append(clock)
        self.used.append(tuple(g.used_bytes for g in usage.per_group))
        self.needed.append(need)
        self.batch.append(len(plan.seqs))

    def update(self, u, clock: float, arrival: float, n_out: int) -> None:
        if u.new_token_ids and u.req_id not in self.first:
            self.first[u.req_id] = clock
            self.ttft.append(clock - arrival)
        self.output_tokens += len(u.new_token_ids)
        if not u.finished:
            return
        if u.finish_reason is FinishReason.ERROR:
            self.errored += 1
            return
        self.finished += 1
        self.latency.append(clock - arrival)
        if n_out > 1:
            self.tpot.append((clock - self.first[u.req_id]) / (n_out - 1))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _requests(reqs: list[TraceRequest]) -> list[tuple[str, TraceRequest]]:
    named = [(r.req_id or f"req-{i}", r) for i, r in enumerate(reqs)]
    if len({n for n, _ in named}) != len(named):
        raise ValueError("workload_requests: request ids must be unique")
    return sorted(named, key=lambda x: x[1].arrival_time)


def simulate(shape: ModelShape, workload_requests: list[TraceRequest], gpu: GPUSpec, allocator: str = "jenga", *,
             kv_budget_bytes: int | None = None, sched_config: SchedulerConfig | None = None, tp: int = 1,
             cost_params: CostParams = CostParams(), gpu_memory_utilization: float = 0.9,
             plan: MemoryPlan | None = None, progress: bool = False,
             static_share: list[float] | None = None, page_tokens: int = 16) -> SimReport:
    """Run `workload_requests` to completion on `tp` x `gpu` under
    `allocator` and report what happened (see SimReport).  The plan is one
    rank's, as the engine's: `build_plan(shape.per_rank(tp), budget,
    allocator=allocator, page_tokens=page_tokens)` with `budget` per rank,
    unless `plan` is given; `static` splits the pool by `static_share`
    (weights per group) when given, else as the workload needs on average.
    Raises ValueError on a model that does not fit
    or duplicate request ids; RuntimeError if the scheduler stalls."""
    config = sched_config or SchedulerConfig()
    if not workload_requests:
        raise ValueError("workload_requests must not be empty")
    budget = kv_budget_bytes
    if budget is None:
        budget = default_kv_budget(shape, gpu, tp, gpu_memory_utilization)
    rank_shape = shape.per_rank(tp)
    if plan is None:
        plan = _plan_for(rank_shape, workload_requests, budget, allocator, static_share, page_tokens)
    need = TrueNeed(_reference_plan(rank_shape, plan))
    manager = MemoryManager(plan, enable_prefix_caching=config.enable_prefix_caching,
                            mamba_interval=config.mamba_checkpoint_interval)
    observer = PoolObserver(manager, need)
    sched = Scheduler(config, manager, max_model_len=shape.max_context)
    runner = SimRunner(shape, plan, gpu, cost_params, tp=tp)
    pending = _requests(workload_requests)
    rec, arrival, live = _Recorder(plan), {}, {}
    clock, nxt, rejected, stalls = 0.0, 0, 0, 0
    bar = _progress(len(pending)) if progress else None
    while nxt < len(pending) or sched.has_unfinished():
        while nxt < len(pending) and pending[nxt][1].arrival_time <= clock:
            rid, tr = pending[nxt]
            nxt += 1
            req = Request(rid, list(tr.prompt), SamplingParams(max_tokens=tr.output_len, ignore_eos=True),
                          images=tr.images, arrival_time=tr.arrival_time, cache_salt=tr.cache_salt)
            try:
                sched.add_request(req)
            except ValueError:
                rejected += 1
                continue
            arrival[rid], live[rid] = tr.arrival_time, req
        if not sched.has_unfinished():
            if nxt >= len(pending):
                break   # the last arrivals were all rejected
            clock = max(clock, pending[nxt][1].arrival_time)
            continue
        observer.begin_step()
        step = sched.schedule()
        if step.seqs:
            rec.step(clock, observer, step)
        result = runner.execute(step) if not step.empty else StepResult({})
        clock += result.duration_s
        rec.encoder_runs += result.encoder_runs
        for u in sched.update(step, result, now=clock):
            rec.update(u, clock, arrival[u.req_id], len(live[u.req_id].output_token_ids))
            if u.finished:
                del live[u.req_id]
                if bar:
                    bar.update(1)
        stalls = 0 if step.seqs else stalls + 1
        if stalls > 2:
            if nxt >= len(pending):
                raise RuntimeError(f"scheduler made no progress with {len(sched.waiting)} waiting requests")
            clock = max(clock, pending[nxt][1].arrival_time)
    if bar:
        bar.close()
    return _report(rec, shape, gpu, plan, sched, tp, budget, len(pending), rejected, clock)


def _plan_for(shape: ModelShape, reqs: list[TraceRequest], budget: int, allocator: str,
              static_share: list[float] | None = None, page_tokens: int = 16) -> MemoryPlan:
    """The allocator's plan; `static` gets `static_share`, else the split
    this workload needs on average (a profiled static partition)."""
    from ..memory.footprint import workload_static_share
    from ..memory.planner import build_plan

    share = static_share if allocator == "static" else None
    if allocator == "static" and share is None:
        sizes = [(len(r.prompt) + r.output_len, sum(i.num_tokens for i in r.images)) for r in reqs]
        share = workload_static_share(build_plan(shape, budget, allocator="jenga", page_tokens=page_tokens), sizes)
    return build_plan(shape, budget, allocator=allocator, static_share=share, page_tokens=page_tokens)


def _reference_plan(shape: ModelShape, plan: MemoryPlan) -> MemoryPlan:
    """The jenga plan of `shape` with `plan`'s hash block as page size: the
    yardstick of true need (tokens and states) and of page rounding (its
    budget is irrelevant)."""
    from ..memory.planner import build_plan
    return build_plan(shape, 1 << 40, allocator="jenga", page_tokens=plan.base_page_tokens)


def _progress(total: int):
    from tqdm import tqdm
    return tqdm(total=total, desc="requests", unit="req")


def _report(rec: _Recorder, shape, gpu, plan, sched, tp, budget, n, rejected, clock) -> SimReport:
    series = SimSeries(rec.labels, tuple(rec.times), tuple(rec.used), tuple(rec.needed), tuple(rec.batch))
    sat = SaturationSummary.of(rec.samples)
    saturated = sat.util_bound is not None
    util = sat.util_bound if saturated else (_mean(rec.util_all) or 0.0)
    return SimReport(plan.allocator, shape.name, gpu.name, tp, budget, plan.pool_bytes, n, rec.finished, rejected,
                     rec.errored, rec.output_tokens, clock, len(rec.times), util, saturated, sat,
                     _mean(rec.decode_batches) or 0.0, sched.stats.hit_rate, sched.stats.num_preemptions,
                     rec.encoder_runs, _mean(rec.ttft), _mean(rec.tpot), _mean(rec.latency), series)


@dataclass(frozen=True)
class Comparison:
    """Reports of several allocators on one workload; `speedups[a]` is the
    reference allocator's throughput (req/s) over allocator a's (the paper's
    "Jenga / vLLM"); the reference is jenga when it ran, else the first."""

    reports: tuple[SimReport, ...]
    reference: str
    speedups: dict[str, float]


def compare(shape: ModelShape, workload_requests: list[TraceRequest], gpu: GPUSpec, allocators: list[str],
            **kwargs) -> Comparison:
    """simulate() once per allocator with the same requests and arguments."""
    if not allocators or len(set(allocators)) != len(allocators):
        raise ValueError(f"allocators must be a non-empty list without repeats, got {allocators!r}")
    if kwargs.get("plan") is not None:
        raise ValueError("compare builds one plan per allocator; do not pass plan")
    reports = tuple(simulate(shape, workload_requests, gpu, a, **kwargs) for a in allocators)
    ref = next((r for r in reports if r.allocator == "jenga"), reports[0])
    speedups = {r.allocator: (ref.throughput_rps / r.throughput_rps if r.throughput_rps else math.inf)
                for r in reports}
    return Comparison(reports, ref.allocator, speedups)

