#!/usr/bin/env python
"""Side by side: vLLM's v1 KVCacheManager and Jenga's MemoryManager on one trace.

An optional tool, outside CI and the install: it needs vLLM, which lives in its
own virtualenv (CPU use only: no tensor is ever allocated), with Jenga's pure
Python `memory/` on the path:

    PYTHONPATH=/work/main/src /work/vllm-venv/bin/python scripts/compare_vllm_manager.py

One discrete-step continuous-batching loop (`compare_replay.run`) replays a
seeded trace through either manager behind a small adapter (`JengaSide` in
`compare_replay.py`, `VllmSide` in `compare_vllm_side.py`, imported only when
this script runs), so the runs differ only in the manager: the same token
budget per step, running requests first, admission in arrival order while the
manager can allocate, preemption of the newest running request when it cannot,
the same byte budget and the same model shape.  This file holds the model
shapes, the plans, the report and the command line.  Exits with a message
naming the fix when vLLM is not importable.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from compare_replay import JengaSide, Result, TraceReq, make_trace, run  # noqa: E402
from jenga.memory.checkpoint_interval import default_mamba_interval  # noqa: E402
from jenga.memory.spec import ModelShape, full, mamba, sliding  # noqa: E402

GIB = 1 << 30


# ---------------------------------------------------------------- shapes, plans
def gemma2_shape() -> ModelShape:
    """Gemma-2-9B: 42 layers alternating sliding(4096) / full, 8 KV heads of 256, bf16."""
    layers = tuple(sliding(4096, 8, 256) if i % 2 == 0 else full(8, 256) for i in range(42))
    return ModelShape("gemma-2-9b", layers, 8192, "google/gemma-2-9b config.json")


def jamba_shape() -> ModelShape:
    """Jamba-1.5-Mini: 32 layers, attention at i % 8 == 4 (8 KV heads of 128),
    Mamba-1 elsewhere (d_inner 8192, d_state 16, d_conv 4), bf16 states."""
    layers = tuple(full(8, 128) if i % 8 == 4 else mamba((3, 8192), (8192, 16)) for i in range(32))
    return ModelShape("jamba-1.5-mini", layers, 8192, "ai21labs/AI21-Jamba-1.5-Mini config.json")


# key -> (preset name, builder, default KV budget in GiB: enough that the trace
# saturates the pool now and then, so placement and eviction matter)
SHAPES = {"gemma2": ("gemma-2-9b", gemma2_shape, 16.0), "jamba": ("jamba-1.5-mini", jamba_shape, 1.0)}


def resolve_shape(key: str) -> tuple[ModelShape, str]:
    """The project's preset when the presets module has it, else the hand-built shape."""
    name, build, _ = SHAPES[key]
    try:
        from jenga.memory.shapes.presets import get_preset
        return get_preset(name), "jenga preset"
    except (ImportError, KeyError, ValueError):
        return build(), "hand-built in this script"


def jenga_plan(shape: ModelShape, budget: int):
    """(plan, where it came from): `build_plan(..., allocator="jenga")` when
    the planner exists, else `hand_plan`."""
    try:
        from jenga.memory.planner import build_plan
    except ImportError:
        return hand_plan(shape, budget), "hand-built (planner not present)"
    return build_plan(shape, budget, allocator="jenga"), "jenga.memory.planner"


def hand_plan(shape: ModelShape, budget: int):
    """A Jenga plan without the planner: one group per distinct spec, 16-token
    pages (one state per mamba page), the LCM of the small pages as the large
    page, and as many large pages as fit in `budget`."""
    from math import lcm

    from jenga.memory.plan import Group, MemoryPlan
    by_spec: dict = {}
    for i, spec in enumerate(shape.layers):
        by_spec.setdefault(spec, []).append(i)
    tokens = [16 if spec.per_token else 1 for spec in by_spec]
    sizes = [pt * spec.unit_bytes() * len(ls) for pt, (spec, ls) in zip(tokens, by_spec.items())]
    large = lcm(*sizes)
    groups = tuple(Group(g, spec, tuple(ls), pt, pt * spec.unit_bytes(), large // size)
                   for g, ((spec, ls), pt, size) in enumerate(zip(by_spec.items(), tokens, sizes)))
    return MemoryPlan(groups, large, budget // large, "jenga", 16, model_name=shape.name,
                      max_context=shape.max_context)


# ------------------------------------------------------------------------ main
def _load_vllm_side():
    """The VllmSide class; exits with a message naming the fix when vLLM is missing."""
    try:
        from compare_vllm_side import VllmSide
    except ImportError as exc:
        sys.exit(f"compare_vllm_manager: vLLM is not importable ({exc}).\n"
                 "This comparison is optional; run it with the vLLM virtualenv, e.g.\n"
                 "  PYTHONPATH=/work/main/src /work/vllm-venv/bin/python scripts/compare_vllm_manager.py")
    return VllmSide


def _vllm_side(cls, shape, budget, args):
    return cls(shape, budget, max_model_len=shape.max_context, token_budget=args.token_budget,
               reserve_full_isl=args.vllm_reserve_full_isl, hash_algo=args.vllm_hash)


def _rows(results: list[Result]) -> list[tuple[str, list[str]]]:
    def each(fn) -> list[str]:
        return [fn(r) for r in results]

    def gib(b: float) -> str:
        return f"{b / GIB:.2f} GiB"

    rows = [
        ("usable pool", each(lambda r: gib(r.pool_bytes))),
        ("steps to drain the trace", each(lambda r: str(r.steps))),
        ("peak bytes in use", each(lambda r: f"{gib(r.peak_used)} ({100 * r.peak_used / r.pool_bytes:.1f}%)")),
        ("mean bytes in use (busy steps)", each(lambda r: f"{gib(r.mean(r.sum_used))} "
                                                         f"({100 * r.mean(r.sum_used) / r.pool_bytes:.1f}%)")),
        ("mean running batch (requests/step)", each(lambda r: f"{r.mean(r.sum_batch):.2f}")),
        ("mean tokens computed per step", each(lambda r: f"{r.mean(r.sum_tokens):.1f}")),
        ("prefix hit rate (first admission)", each(lambda r: f"{100 * r.hit_rate:.2f}% "
                                                            f"({r.hit_tokens} tok)")),
        ("hit tokens on re-admission", each(lambda r: str(r.recompute_hit_tokens))),
        ("preemptions", each(lambda r: str(r.preemptions))),
        ("in use when a running request could not grow", each(
            lambda r: f"{100 * sum(r.fail_used) / len(r.fail_used) / r.pool_bytes:.1f}% (mean of {len(r.fail_used)})"
            if r.fail_used else "never failed")),
        ("tokens computed (incl. recompute)", each(lambda r: str(r.computed_tokens))),
        ("manager CPU us/step (all calls)", each(lambda r: f"{r.manager_us_per_step:.1f}")),
    ]
    for op in ("add", "lookup", "allocate", "commit", "free", "step"):
        rows.append((f"  {op}: us/step (calls)", each(
            lambda r, op=op: f"{1e6 * r.seconds.get(op, 0.0) / max(r.steps, 1):.1f} ({r.calls.get(op, 0)})")))
    rows.append(("  of which block hashing: us/step", each(
        lambda r: "not split out" if r.hash_seconds is None else f"{1e6 * r.hash_seconds / max(r.steps, 1):.1f}")))
    return rows


def report(results: list[Result]) -> str:
    """The side-by-side table, one column per manager."""
    rows = _rows(results)
    w0 = max(len(k) for k, _ in rows)
    ws = [max(len(r.manager), *(len(v[i]) for _, v in rows)) for i, r in enumerate(results)]
    head = " | ".join([" " * w0] + [r.manager.rjust(w) for r, w in zip(results, ws)])
    lines = [head, "-" * len(head)]
    lines += [" | ".join([k.ljust(w0)] + [x.rjust(w) for x, w in zip(v, ws)]) for k, v in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gemma2,jamba", help="comma list of: " + ", ".join(SHAPES))
    p.add_argument("--budget-gib", type=float, default=None,
                   help="KV memory budget for both managers (default: " +
                   ", ".join(f"{k} {v[2]:g}" for k, v in SHAPES.items()) + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=int, default=8, help="shared long documents")
    p.add_argument("--questions", type=int, default=6, help="questions per document")
    p.add_argument("--shorts", type=int, default=48, help="short independent prompts")
    p.add_argument("--doc-len", default="2000,7000", help="MIN,MAX tokens of a shared document")
    p.add_argument("--rate", type=float, default=0.5, help="mean arrivals per step")
    p.add_argument("--token-budget", type=int, default=2048, help="tokens computed per step")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="replays per manager; the fastest one's timings are shown")
    p.add_argument("--vllm-reserve-full-isl", action="store_true",
                   help="vLLM's default admission gate (whole prompt must fit); off = first chunk, like Jenga")
    p.add_argument("--vllm-hash", default="sha256", help="vLLM prefix_caching_hash_algo (default: vLLM's)")
    p.add_argument("--jenga-mamba-interval", type=int, default=None,
                   help="tokens between Jenga's cached Mamba checkpoints (default: the MemoryManager's "
                        "auto rule, memory/checkpoint_interval.py: 1024 on Jamba-1.5-Mini)")
    args = p.parse_args(argv)
    try:
        lo, hi = (int(x) for x in args.doc_len.split(","))
    except ValueError:
        p.error(f"--doc-len: expected MIN,MAX, got {args.doc_len!r}")
    if not 0 < lo <= hi:
        p.error(f"--doc-len: need 0 < MIN <= MAX, got {args.doc_len!r}")
    args.doc_len = (lo, hi)
    for key in args.models.split(","):
        if key not in SHAPES:
            p.error(f"--models: unknown model {key!r}; choose from {', '.join(SHAPES)}")
    if (args.budget_gib is not None and args.budget_gib <= 0) or (
            args.jenga_mamba_interval is not None and args.jenga_mamba_interval <= 0) or min(
            args.token_budget, args.max_num_seqs, args.repeats) <= 0:
        p.error("--budget-gib, --token-budget, --max-num-seqs, --jenga-mamba-interval and --repeats must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    vllm_cls = _load_vllm_side()
    trace = make_trace(args.seed, args.docs, args.questions, args.shorts, args.rate, args.doc_len)
    print(f"trace: {len(trace)} requests (seed {args.seed}: {args.docs} docs of {args.doc_len[0]}-"
          f"{args.doc_len[1]} tokens x {args.questions} questions "
          f"+ {args.shorts} short), {sum(len(t.prompt) for t in trace)} prompt tokens, "
          f"{sum(len(t.output) for t in trace)} output tokens; {args.token_budget} tokens/step, "
          f"max {args.max_num_seqs} running")
    for key in args.models.split(","):
        gib = args.budget_gib if args.budget_gib is not None else SHAPES[key][2]
        budget = int(gib * GIB)
        shape, shape_src = resolve_shape(key)
        plan, plan_src = jenga_plan(shape, budget)
        print(f"\n== {shape.name}, KV budget {gib:g} GiB (shape: {shape_src}; Jenga plan: {plan_src})")
        print(f"vllm : {_vllm_side(vllm_cls, shape, budget, args).describe()}")
        print("jenga: " + plan.describe().replace("\n", "\n       "))
        interval = args.jenga_mamba_interval or default_mamba_interval(plan)
        if any(g.spec.state_bytes for g in plan.groups):
            print(f"jenga: Mamba checkpoint every {interval} tokens"
                  f"{'' if args.jenga_mamba_interval else ' (auto: memory/checkpoint_interval.py)'}")
        makers = (lambda: _vllm_side(vllm_cls, shape, budget, args),
                  lambda: JengaSide(plan, interval))
        results = [best_of(make, trace, args) for make in makers]
        print(report(results))
    return 0


def best_of(make, trace: list[TraceReq], args) -> Result:
    """Run `args.repeats` times on fresh managers; the replay is deterministic
    (checked), so only the timings vary: keep the fastest run's."""
    runs = []
    for _ in range(args.repeats):
        side = make()
        gc.collect()
        runs.append(run(side, trace, args.token_budget, args.max_num_seqs))
    for r in runs[1:]:
        if (r.steps, r.sum_used, r.hit_tokens, r.preemptions) != (runs[0].steps, runs[0].sum_used,
                                                                   runs[0].hit_tokens, runs[0].preemptions):
            raise RuntimeError(f"{side.name}: two replays of one trace differ; the comparison is not deterministic")
    return min(runs, key=lambda r: sum(r.seconds.values()))


if __name__ == "__main__":
    sys.exit(main())
