"""`jenga bench paper`: the paper's throughput table, simulated.

Each row is one run of the paper artifact's `figure14.md` (github.com/
heheda12345/Jenga-SOSP25-AE), rebuilt from its commands: the same model
shape, request count, output length, dataset recipe, engine (vLLM v0 fork or
v1 fork) and engine flags (`--enforce-eager`, `--enable-chunked-prefill`,
`--enable-prefix-caching`, `--max-model-len`, `--max-num-seqs`,
`--gpu-memory-utilization`, TP).  Requests run through the real scheduler and
memory manager under every allocator on a simulated H100, side by side;
only the allocator changes.  `static` splits the pool as the artifact's
`--static-partition-allocator` does (`planner.artifact_static_share`).
`--engine v0|v1` runs every row on one engine instead, to show how the
gains move with the engine around the manager.  Results and plots go to
`--out`.  What could not be rebuilt is listed in docs/results/paper-sim.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

ALLOCATORS = ["jenga", "max-page", "static", "uniform"]
ENGINES = ("v0-eager", "v0", "v1")

# The artifact's arXiv prompts: consecutive arXiv articles concatenated up to
# --hf-max-len, four questions per document, shuffled (benchmark_serving.py,
# generate_arxiv_requests); article lengths are our estimate.
ARXIV = {"questions_per_doc": 4, "article_median": 12000, "doc_sigma": 0.6, "output_len": 150,
         "question_tokens": (8, 12)}
# The artifact's "ministral" arXiv subset: article ids grouped into documents
# (benchmark_serving.py get_ministral_article_ids); the Llama 4 row sets no
# --hf-max-len, so each of its 40 documents is its whole group
ARXIV_GROUPS = (9, 5, 7, 5, 4, 11, 10, 18, 9, 11, 5, 8, 8, 3, 2, 3, 5, 13, 10, 9, 10, 10, 11, 10, 10, 11, 11, 11,
                3, 5, 11, 8, 10, 11, 12, 8, 9, 6, 10, 3)
# Llama-3.1-405B-evals MMLU-Pro details: a 5-shot chain-of-thought prompt per
# subject (14 subjects) followed by the question; outputs are the 405B model's
# recorded answers.  Lengths are our estimate of that dataset.
MMLU = {"shared_prefix_len": 1500, "num_prefixes": 14, "prompt_len": (1600, 2000), "output_len": (100, 400)}


@dataclass(frozen=True)
class Experiment:
    """One row of the paper's table as the artifact ran it; `paper` holds
    the measured req/s per allocator (None: the paper reports OOM)."""

    name: str
    model: str
    workload: str
    num_requests: int
    workload_args: dict = field(default_factory=dict)
    engine: str = "v0-eager"
    tp: int = 1
    max_num_seqs: int = 256
    prefix_caching: bool = False
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    weight_bytes_scale: float = 1.0
    paper: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")


EXPERIMENTS = (
    Experiment("mllama", "llama-3.2-11b-vision", "mmmu_pro", 200, {"output_len": 200}, max_num_seqs=52,
               paper={"max-page": 1.75, "static": 1.60, "jenga": 2.67, "vllm": 1.56}),
    Experiment("gemma-3", "gemma-3-12b", "arxiv_qa", 40, {**ARXIV, "max_doc": 90000 - 150}, engine="v1",
               max_num_seqs=1024, prefix_caching=True,
               paper={"max-page": 0.19, "static": 0.20, "jenga": 0.25, "vllm": 0.18}),
    Experiment("ministral", "ministral-8b", "arxiv_qa", 32, {**ARXIV, "max_doc": 80000 - 150}, engine="v0",
               prefix_caching=True,
               paper={"max-page": 0.198, "static": None, "jenga": 0.304, "vllm": 0.202}),
    Experiment("llama4", "llama-4-scout", "arxiv_qa", 160, {**ARXIV, "articles_per_doc": ARXIV_GROUPS,
                                                           "max_doc": 1_000_000 - 150},
               engine="v1", tp=8, max_num_seqs=1024, prefix_caching=True, max_model_len=1_000_000,
               paper={"max-page": 0.76, "static": 0.81, "jenga": 1.16, "vllm": 0.67}),
    Experiment("jamba", "jamba-1.5-mini", "mmlu_pro", 1000, {**MMLU, "output_len": 20}, tp=4,
               max_num_seqs=1024, max_model_len=8192,
               paper={"max-page": 9.52, "static": 7.47, "jenga": 10.38, "vllm": 7.47}),
    Experiment("character-ai", "character-ai-70b", "mmlu_pro", 50, MMLU, engine="v0", prefix_caching=True,
               max_model_len=65536, gpu_memory_utilization=0.937, weight_bytes_scale=0.5,
               paper={"max-page": 1.30, "static": 1.73, "jenga": 1.95, "vllm": 1.20}),
    Experiment("pyramidkv", "pyramidkv-70b", "mmlu_pro", 100, MMLU, tp=4, max_model_len=2048,
               paper={"max-page": 0.21, "static": 0.14, "jenga": 0.21, "vllm": 0.14}),
    Experiment("llama-70b", "llama-3.1-70b", "mmlu_pro", 200, MMLU, engine="v1", tp=4, max_num_seqs=1024,
               prefix_caching=True, paper={"max-page": 9.24, "static": 9.23, "jenga": 9.21, "vllm": 9.23}),
)


def engine_settings(exp: Experiment, shape, engine: str | None = None):
    """(SchedulerConfig, CostParams) of the engine the row ran on.  v0: the
    artifact disables chunked prefill (or the model cannot chunk), so every
    prompt prefills whole in a prefill-only step; eager or with decode CUDA
    graphs.  v1: chunked prefill of 8,192 tokens mixed with decodes (its H100
    server default), CUDA graphs."""
    from ..sched.config import SchedulerConfig
    from ..sim.cost import CostParams

    engine = engine or exp.engine
    # vLLM's schedulers admit a request even while another computes the
    # same prefix; our shared-prefill wait is off to run the engine they ran
    if engine == "v1":
        return (SchedulerConfig(max_num_seqs=exp.max_num_seqs, max_num_batched_tokens=8192,
                                enable_prefix_caching=exp.prefix_caching, shared_prefill_wait=0), CostParams())
    config = SchedulerConfig(max_num_seqs=exp.max_num_seqs, enable_prefix_caching=exp.prefix_caching,
                             enable_chunked_prefill=False, mixed_batches=False, shared_prefill_wait=0,
                             max_num_batched_tokens=max(shape.max_context, 2048))
    return config, CostParams.vllm_v0(eager=engine == "v0-eager")


def row_shape(exp: Experiment):
    """The preset as the row served it: --max-model-len, fp8 weights."""
    from ..memory.shapes.presets import get_preset

    shape = get_preset(exp.model)
    return replace(shape, max_context=exp.max_model_len or shape.max_context,
                   weights_bytes=int(shape.weights_bytes * exp.weight_bytes_scale))


def run(exp: Experiment, engine: str | None = None, allocators: list[str] = ALLOCATORS,
        num_requests: int | None = None) -> dict:
    """Simulate one experiment under each allocator; returns a row dict."""
    from ..memory.planner import artifact_static_share, build_plan
    from ..sim.gpus import get_gpu
    from ..sim.simulate import compare, default_kv_budget
    from ..sim.workloads import make_workload

    shape = row_shape(exp)
    reqs = make_workload(exp.workload, num_requests or exp.num_requests, **exp.workload_args)
    config, params = engine_settings(exp, shape, engine)
    gpu = get_gpu("H100")
    budget = default_kv_budget(shape, gpu, exp.tp, exp.gpu_memory_utilization)
    share = artifact_static_share(build_plan(shape.per_rank(exp.tp), budget, allocator="jenga").groups)
    comp = compare(shape, reqs, gpu, allocators, sched_config=config, tp=exp.tp, cost_params=params,
                   kv_budget_bytes=budget, static_share=share)
    return {"experiment": exp, "comparison": comp, "engine": engine or exp.engine}


def render(rows: list[dict]) -> str:
    lines = ["| row | engine | allocator | req/s | decode batch | mem util | hit rate | preempt "
             "| Jenga / this | paper Jenga / this |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        exp, comp = row["experiment"], row["comparison"]
        paper = exp.paper
        for r in comp.reports:
            p = paper.get(r.allocator)
            ref = f"{paper['jenga'] / p:.2f}" if p else ("OOM" if r.allocator in paper else "-")
            lines.append(f"| {exp.name} ({exp.model}, {exp.workload} x{exp.num_requests}, tp{exp.tp}) "
                         f"| {row['engine']} | {r.allocator} | {r.throughput_rps:.3f} | {r.mean_decode_batch:.1f} "
                         f"| {100 * r.mem_util:.1f}%{'' if r.saturated else '*'} | {100 * r.prefix_hit_rate:.1f}% "
                         f"| {r.preemptions} | {comp.speedups[r.allocator]:.2f} | {ref} |")
    return "\n".join(lines)


def add_args(p) -> None:
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--engine", default="", choices=("",) + ENGINES,
                   help="run every row on this engine (default: each row's own, as the artifact ran it)")
    p.add_argument("--out", default="", help="folder for the markdown table, JSON and plots")


def main(args) -> int:
    from ..sim.report import plot_reports

    wanted = {x for x in args.only.split(",") if x}
    unknown = wanted - {e.name for e in EXPERIMENTS}
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; known: {[e.name for e in EXPERIMENTS]}")
    rows = []
    for exp in EXPERIMENTS:
        if wanted and exp.name not in wanted:
            continue
        rows.append(run(exp, args.engine or None))
        print(render(rows[-1:]).split("\n", 2)[2], flush=True)
    table = render(rows)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tag = args.engine or "artifact"
        for row in rows:
            exp = row["experiment"]
            plot_reports(row["comparison"].reports, out / f"paper-{tag}-{exp.name}.png",
                         title=f"{exp.model} / {exp.workload} / H100 x{exp.tp} / {row['engine']}")
        data = [{"row": r["experiment"].name, "engine": r["engine"], "speedups": r["comparison"].speedups,
                 "req_per_s": {x.allocator: x.throughput_rps for x in r["comparison"].reports}} for r in rows]
        (out / f"paper-{tag}.json").write_text(json.dumps(data, indent=2))
        (out / f"paper-{tag}.md").write_text(table + "\n")
    return 0
