"""`jenga bench utilisation`: memory utilisation at saturation, simulated.

For each heterogeneous model of the paper, a workload whose requests are
small next to the pool (the pool holds about `fit` average requests under
ideal packing) arrives all at once, so memory stays the binding constraint
for most of the run.  Utilisation = bytes of state some running request
still needs / pool bytes, averaged over the steps that left a request
waiting for memory (sim/simulate.py); the baselines run the same requests.
"""

from __future__ import annotations

import json

ROWS = (
    ("llama-3.2-11b-vision", 1, "mmmu_pro", {}),
    ("gemma-3-12b", 1, "arxiv_qa", {"questions_per_doc": 1, "doc_median": 6000, "max_doc": 16000}),
    ("gemma-2-9b", 1, "sharegpt", {"prompt_median": 2000}),
    ("ministral-8b", 1, "arxiv_qa", {"questions_per_doc": 1, "doc_median": 8000, "max_doc": 16000}),
    ("jamba-1.5-mini", 4, "mmlu_pro", {}),
    ("character-ai-70b", 4, "arxiv_qa", {"questions_per_doc": 1, "doc_median": 6000, "max_doc": 16000}),
    ("pyramidkv-70b", 4, "arxiv_qa", {"questions_per_doc": 1, "doc_median": 6000, "max_doc": 16000}),
)
ALLOCATORS = ["jenga", "max-page", "static", "uniform"]


def run_row(model: str, tp: int, workload: str, kwargs: dict, num_requests: int = 200, fit: int = 24):
    from ..memory.footprint import ideal_bytes
    from ..memory.planner import build_plan
    from ..memory.shapes.presets import get_preset
    from ..sched.config import SchedulerConfig
    from ..sim.gpus import get_gpu
    from ..sim.simulate import compare
    from ..sim.workloads import make_workload

    shape = get_preset(model)
    reqs = make_workload(workload, num_requests, **kwargs)
    probe = build_plan(shape, 1 << 40)
    mean = sum(ideal_bytes(probe, len(r.prompt) + r.output_len, sum(i.num_tokens for i in r.images))
               for r in reqs) / len(reqs)
    budget = int(mean * fit)
    return compare(shape, reqs, get_gpu("H100"), ALLOCATORS, tp=tp, kv_budget_bytes=budget,
                   sched_config=SchedulerConfig(enable_prefix_caching=False))


def add_args(p) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--num-requests", type=int, default=200)


def main(args) -> int:
    out = []
    for model, tp, workload, kwargs in ROWS:
        comp = run_row(model, tp, workload, kwargs, args.num_requests)
        for r in comp.reports:
            out.append({"model": model, "workload": workload, "allocator": r.allocator, "mem_util": r.mem_util,
                        "saturated": r.saturated, "decode_batch": r.mean_decode_batch,
                        "req_per_s": r.throughput_rps, "preemptions": r.preemptions})
            if not args.json:
                print(f"| {model} | {workload} | {r.allocator} | {100 * r.mem_util:.2f}%{'' if r.saturated else '*'} "
                      f"| {r.mean_decode_batch:.1f} | {r.throughput_rps:.3f} | {comp.speedups[r.allocator]:.2f} "
                      f"| {r.preemptions} |", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))
    return 0
