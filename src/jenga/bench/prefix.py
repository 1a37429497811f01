"""`jenga bench prefix`: prefix-cache hit rates per allocator, simulated.

Experiments from the issue and the paper:
- a Mamba hybrid (Jamba-1.5-Mini) on MMLU-pro-like prompts sharing a
  100-token system prompt: Jenga checkpoints the state at prompt ends and
  branch points, vLLM v1 (`uniform`) only at its large block boundaries;
- long documents with several questions each, in a pool too small to keep
  them all, on the same hybrid (where uniform's every-block checkpoints of
  a 16 MB state crowd documents out) and on Gemma-3 (sliding + full, equal
  page sizes: what eviction gives up first decides).

Every experiment runs the allocators as shipped: Jenga's Mamba checkpoint
interval is the auto default (1024 tokens on Jamba-1.5-Mini,
memory/checkpoint_interval.py).  The shared-prefix hits come from the
prompt-end and branch-point checkpoints, which do not depend on it.
"""

from __future__ import annotations

import json

ALLOCATORS = ["jenga", "uniform", "max-page"]


def mamba_shared_prefix(num_requests: int = 200, allocators=ALLOCATORS):
    from ..memory.shapes.presets import get_preset
    from ..sim.gpus import get_gpu
    from ..sim.simulate import compare
    from ..sim.workloads import mmlu_pro

    reqs = mmlu_pro(num_requests, shared_prefix_len=100, output_len=20)
    return compare(get_preset("jamba-1.5-mini"), reqs, get_gpu("H100"), allocators, tp=4)


def long_documents(model: str, tp: int, kv_fraction: float, num_requests: int = 160,
                   allocators=ALLOCATORS, **doc_args):
    from ..memory.shapes.presets import get_preset
    from ..sim.gpus import get_gpu
    from ..sim.simulate import compare, default_kv_budget
    from ..sim.workloads import arxiv_qa

    shape, gpu = get_preset(model), get_gpu("H100")
    reqs = arxiv_qa(num_requests, questions_per_doc=4, **doc_args)
    budget = int(default_kv_budget(shape, gpu, tp) * kv_fraction)
    return compare(shape, reqs, gpu, allocators, kv_budget_bytes=budget, tp=tp)


EXPERIMENTS = {
    "jamba-1.5-mini, 100-token shared system prompt": mamba_shared_prefix,
    "jamba-1.5-mini, 50 documents (1-8K) x 4 questions, 3% of the KV pool":
        lambda: long_documents("jamba-1.5-mini", 4, 0.03, 200, rate=4.0, output_len=30, doc_median=3000,
                               max_doc=8000),
    "gemma-3-12b, 40 documents (up to 110K) x 4 questions, 25% of the KV pool":
        lambda: long_documents("gemma-3-12b", 1, 0.25, 160, rate=2.0, output_len=50),
}


def add_args(p) -> None:
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def main(args) -> int:
    rows = []
    for name, experiment in EXPERIMENTS.items():
        comp = experiment()
        for r in comp.reports:
            rows.append({"experiment": name, "allocator": r.allocator, "hit_rate": r.prefix_hit_rate,
                         "req_per_s": r.throughput_rps, "preemptions": r.preemptions})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"| experiment | allocator | prefix hit rate | req/s | preemptions |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['experiment']} | {r['allocator']} | {100 * r['hit_rate']:.1f}% | {r['req_per_s']:.3f} | "
              f"{r['preemptions']} |")
    return 0
