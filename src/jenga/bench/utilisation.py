"""`jenga bench utilisation`: memory utilisation at saturation, simulated.

For each heterogeneous model of the paper, a workload whose requests are
small next to the pool (the pool holds about `fit` = 100 average requests under
ideal packing) arrives all at once, so memory stays the binding constraint
for most of the run.  Utilisation = bytes of state some running request
still needs / pool bytes, averaged over the steps that left a request
waiting for memory (sim/simulate.py); the baselines run the same requests.
"""

from __future__ import annotations

import json

# Outputs long enough that many requests decode at once (concurrency is
# about output length / prefill steps per request), so memory, not the
# prefill rate, bounds the batch.
DOCS = {"questions_per_doc": 1, "doc_median": 6000, "max_doc": 16000, "output_len": (400, 800)}
ROWS = (
    ("llama-3.2-11b-vision", 1, "mmmu_pro", {}),
    ("gemma-3-12b", 1, "arxiv_qa", DOCS),
    ("gemma-2-9b", 1, "sharegpt", {"prompt_median": 2000, "output_median": 600}),
    ("ministral-8b", 1, "arxiv_qa", {**DOCS, "doc_median": 40000, "max_doc": 60000}),
    ("jamba-1.5-mini", 4, "mmlu_pro", {"output_len": (400, 800)}),
    ("character-ai-70b", 4, "arxiv_qa", DOCS),
    ("pyramidkv-70b", 4, "arxiv_qa", DOCS),
)
ALLOCATORS = ["jenga", "max-page", "static", "uniform"]


def run_row(model: str, tp: int, workload: str, kwargs: dict, num_requests: int = 300, fit: int = 100):
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
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--only", default="", help="comma-separated models (default: all)")


def main(args) -> int:
    out = []
    wanted = {x for x in args.only.split(",") if x}
    for model, tp, workload, kwargs in ROWS:
        if wanted and model not in wanted:
            continue
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
