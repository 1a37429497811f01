"""`jenga simulate`: a workload (or a JSONL trace) through the real scheduler
and memory manager on a simulated GPU, once per allocator, side by side."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..cliutil import from_args
from ..sched.config import SchedulerConfig
from .common import resolve_shape, split_allocators

# The paper artifact's request counts per workload (docs/cost-model.md).
DEFAULT_REQUESTS = {"mmmu_pro": 200, "arxiv_qa": 32, "mmlu_pro": 1000, "sharegpt": 500, "multiturn": 200}


def workload(args) -> list:
    from ..sim.trace import load_trace
    from ..sim.workloads import make_workload

    if args.trace:
        return load_trace(args.trace)
    name = args.workload.replace("-", "_").lower()
    n = args.num_requests or DEFAULT_REQUESTS.get(name, 200)
    return make_workload(name, n, rate=args.rate, seed=args.seed)


def main(args) -> int:
    from ..sim.gpus import get_gpu
    from ..sim.report import format_reports, plot_reports
    from ..sim.simulate import compare

    shape = resolve_shape(args.model, args.kv_cache_dtype)
    reqs = workload(args)
    config = from_args(SchedulerConfig, args)
    comp = compare(shape, reqs, get_gpu(args.gpu), split_allocators(args.allocator), sched_config=config,
                   tp=args.tp, kv_budget_bytes=args.kv_bytes, progress=not args.no_progress and not args.json)
    if args.plot:
        plot_reports(comp.reports, args.plot, title=f"{shape.name} / {args.trace or args.workload} / {args.gpu}")
    if args.json:
        out = [{k: v for k, v in asdict(r).items() if k != "series"} | {"throughput_rps": r.throughput_rps,
                                                                          "throughput_tps": r.throughput_tps}
               for r in comp.reports]
        print(json.dumps({"reports": out, "speedups": comp.speedups}, indent=2))
    else:
        print(f"{shape.name} on {args.tp} x {args.gpu}, {len(reqs)} requests "
              f"({args.trace or args.workload})")
        print(format_reports(comp.reports, comp))
    return 0
