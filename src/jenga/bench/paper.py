"""`jenga bench paper`: the paper's throughput table, simulated.

Each row runs one of the paper's models on its workload with the artifact's
settings (all requests at once, fixed output lengths, `ignore_eos`) through
the real scheduler and memory manager under every allocator, on a simulated
H100, side by side.  By default the engine around the manager behaves as
the vLLM v0.6.3 the paper measured: no prefix caching, whole-prompt
prefills in prefill-only steps, eager execution (`CostParams.vllm_v0_eager`).
`--modern` runs a vLLM-v1-style engine instead (chunked prefill mixed with
decodes, CUDA-graph launch costs), to show how the gains move.  Results and
plots go to `--out`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

ALLOCATORS = ["jenga", "max-page", "static", "uniform"]


@dataclass(frozen=True)
class Experiment:
    """One row of the paper's table; `paper` holds its measured req/s."""

    name: str
    model: str
    workload: str
    num_requests: int
    workload_args: dict = field(default_factory=dict)
    tp: int = 1
    max_num_seqs: int = 256
    paper: dict = field(default_factory=dict)


EXPERIMENTS = (
    Experiment("mllama", "llama-3.2-11b-vision", "mmmu_pro", 200, {"output_len": 200}, max_num_seqs=52,
               paper={"max-page": 1.75, "static": 1.60, "jenga": 2.67, "vllm": 1.56}),
    Experiment("gemma-3", "gemma-3-12b", "arxiv_qa", 40, {"questions_per_doc": 1, "max_doc": 90000,
                                                          "output_len": 150},
               paper={"max-page": 0.19, "static": 0.20, "jenga": 0.25, "vllm": 0.18}),
    Experiment("ministral", "ministral-8b", "arxiv_qa", 32, {"questions_per_doc": 1, "max_doc": 80000,
                                                             "output_len": 150},
               paper={"max-page": 0.198, "static": None, "jenga": 0.304, "vllm": 0.202}),
    Experiment("jamba", "jamba-1.5-mini", "mmlu_pro", 1000, {"output_len": 20}, tp=4,
               paper={"max-page": 9.52, "static": 7.47, "jenga": 10.38, "vllm": 7.47}),
    Experiment("character-ai", "character-ai-70b", "arxiv_qa", 64, {"questions_per_doc": 1, "max_doc": 60000,
                                                                    "output_len": 150}, tp=4,
               paper={"max-page": 1.30, "static": 1.73, "jenga": 1.95, "vllm": 1.20}),
    Experiment("pyramidkv", "pyramidkv-70b", "arxiv_qa", 64, {"questions_per_doc": 1, "max_doc": 60000,
                                                              "output_len": 150}, tp=4,
               paper={"max-page": 0.21, "static": 0.14, "jenga": 0.21, "vllm": 0.14}),
    Experiment("llama-70b", "llama-3.1-70b", "sharegpt", 1000, {}, tp=4,
               paper={"max-page": 9.24, "static": 9.23, "jenga": 9.21, "vllm": 9.23}),
)


def run(exp: Experiment, modern: bool = False, allocators: list[str] = ALLOCATORS,
        kv_fraction: float = 1.0) -> dict:
    """Simulate one experiment under each allocator; returns a row dict.
    kv_fraction < 1 shrinks the KV pool so that memory binds everywhere
    (to measure utilisation at saturation)."""
    from ..memory.shapes.presets import get_preset
    from ..sched.config import SchedulerConfig
    from ..sim.cost import CostParams
    from ..sim.gpus import get_gpu
    from ..sim.simulate import compare
    from ..sim.workloads import make_workload

    reqs = make_workload(exp.workload, exp.num_requests, **exp.workload_args)
    shape = get_preset(exp.model)
    if modern:   # a vLLM-v1-style engine: chunked prefill mixed with decodes, CUDA graphs
        config = SchedulerConfig(max_num_seqs=exp.max_num_seqs, enable_prefix_caching=False)
        params = CostParams()
    else:        # vLLM v0.6.3 as the artifact ran it, eager
        config = v0_scheduler_config(shape, exp.max_num_seqs)
        params = CostParams.vllm_v0_eager()
    from ..sim.simulate import default_kv_budget

    budget = int(default_kv_budget(shape, get_gpu("H100"), exp.tp) * kv_fraction)
    comp = compare(shape, reqs, get_gpu("H100"), allocators, sched_config=config, tp=exp.tp,
                   cost_params=params, kv_budget_bytes=budget)
    return {"experiment": exp, "comparison": comp}


def v0_scheduler_config(shape, max_num_seqs: int):
    """vLLM v0.6.3's defaults: prefix caching off; chunked prefill (512-token
    steps, decodes first) for long-context (> 32K) decoder-only models;
    whole-prompt, prefill-only steps for models v0 could not chunk
    (encoder-decoder cross attention, Mamba)."""
    from ..memory.policies import policy_for
    from ..sched.config import SchedulerConfig

    unchunkable = any(policy_for(s.kind).recurrent or (policy_for(s.kind).image_keyed and s.num_kv_heads)
                      for s in shape.layers)
    if shape.max_context > 32768 and not unchunkable:
        return SchedulerConfig(max_num_seqs=max_num_seqs, enable_prefix_caching=False,
                               max_num_batched_tokens=512)
    return SchedulerConfig(max_num_seqs=max_num_seqs, enable_prefix_caching=False, enable_chunked_prefill=False,
                           mixed_batches=False, max_num_batched_tokens=max(shape.max_context, 2048))


def render(rows: list[dict]) -> str:
    lines = ["| row | allocator | req/s | decode batch | mem util | preempt | Jenga / this | paper Jenga / this |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        exp, comp = row["experiment"], row["comparison"]
        paper = exp.paper
        for r in comp.reports:
            p = paper.get(r.allocator)
            ref = f"{paper['jenga'] / p:.2f}" if p else ("OOM" if r.allocator in paper else "-")
            lines.append(f"| {exp.name} ({exp.model}, {exp.workload}, tp{exp.tp}) | {r.allocator} | "
                         f"{r.throughput_rps:.3f} | {r.mean_decode_batch:.1f} | {100 * r.mem_util:.1f}%"
                         f"{'' if r.saturated else '*'} | {r.preemptions} | {comp.speedups[r.allocator]:.2f} | {ref} |")
    return "\n".join(lines)


def add_args(p) -> None:
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--modern", action="store_true", help="default cost model instead of vLLM v0 eager")
    p.add_argument("--out", default="", help="folder for the markdown table, JSON and plots")
    p.add_argument("--kv-fraction", type=float, default=1.0,
                   help="scale every row's KV budget (e.g. 0.1 so memory binds for all allocators)")


def main(args) -> int:
    from ..sim.report import plot_reports

    if not 0 < args.kv_fraction <= 1:
        raise ValueError(f"--kv-fraction must be in (0, 1], got {args.kv_fraction}")
    wanted = {x for x in args.only.split(",") if x}
    unknown = wanted - {e.name for e in EXPERIMENTS}
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[e.name for e in EXPERIMENTS]}")
    rows = []
    for exp in EXPERIMENTS:
        if wanted and exp.name not in wanted:
            continue
        rows.append(run(exp, args.modern, kv_fraction=args.kv_fraction))
        print(render(rows[-1:]).split("\n", 2)[2], flush=True)
    table = render(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tag = ("modern" if args.modern else "v0") + ("" if args.kv_fraction == 1.0 else f"-kv{args.kv_fraction:g}")
        for row in rows:
            exp = row["experiment"]
            plot_reports(row["comparison"].reports, out / f"paper-{tag}-{exp.name}.png",
                         title=f"{exp.model} / {exp.workload} / H100 x{exp.tp}")
        data = [{"row": r["experiment"].name, "speedups": r["comparison"].speedups,
                 "req_per_s": {x.allocator: x.throughput_rps for x in r["comparison"].reports}} for r in rows]
        (out / f"paper-{tag}.json").write_text(json.dumps(data, indent=2))
        (out / f"paper-{tag}.md").write_text(table + "\n")
    return 0
