#!/usr/bin/env python
"""Side by side: vLLM's v1 KVCacheManager and Jenga's MemoryManager on several traces.

An optional tool, outside CI and the install: it needs vLLM, which lives in its
own virtualenv (CPU use only: no tensor is ever allocated), with Jenga's pure
Python `memory/` on the path:

    PYTHONPATH=$PWD/src /work/vllm-venv/bin/python scripts/compare_vllm_manager.py

One discrete-step continuous-batching loop (`compare_replay.run`) replays a
seeded trace (`compare_traces.py`) through either manager behind a small
adapter (`JengaSide` in `compare_replay.py`, `VllmSide` in
`compare_vllm_side.py`, imported only when this script runs): the same token
budget per step, running requests first, admission in arrival order while
the manager can allocate, preemption of the newest running request when it
cannot, the same byte budget and the same model shape.  Each system runs at
its shipped defaults (vLLM 0.33: the whole prompt must fit at admission,
retention interval 0; Jenga: its scheduler's admission check, shared-prefix
hints and prefill wait); the other settings are labelled variant columns.
This file holds the traces' settings, the report and the command line.
Exits with a message naming the fix when vLLM is not importable.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from compare_replay import JengaSide, NeedMeter, Result, TraceReq, run  # noqa: E402
from compare_traces import chats_trace, long_unique_trace, make_trace, shared_system_trace  # noqa: E402
from jenga.memory.checkpoint_interval import default_mamba_interval  # noqa: E402
from jenga.memory.planner import build_plan  # noqa: E402
from jenga.memory.shapes.presets import get_preset  # noqa: E402

GIB = 1 << 30


# ---------------------------------------------------------------- the traces
# key -> (what, preset, builder(seed), KV budgets in GiB: small enough that memory binds,
# large enough that vLLM's default admission (the whole prompt in every group) can take
# the longest prompt: 24K tokens of Gemma-3-12B are 9,216 of its 1-MiB blocks)
TRACES = {
    "docs": ("long documents with repeated questions (sliding window 1024)", "gemma-3-12b",
             lambda seed: make_trace(seed, docs=8, questions=4, shorts=32, rate=0.5, doc_len=(8000, 24000)),
             (12.0, 24.0)),
    "system": ("a short shared system prompt (200 tokens) on a Mamba hybrid", "jamba-1.5-mini",
               lambda seed: shared_system_trace(seed, 160, rate=4.0), (1.0,)),
    "chats": ("lognormal chats, nothing shared", "llama-3.1-8b",
              lambda seed: chats_trace(seed, 400, rate=2.0), (4.0,)),
    "unique": ("long unique prompts (8-24K tokens), short outputs", "gemma-3-12b",
               lambda seed: long_unique_trace(seed, 32, rate=0.2, prompt_len=(8000, 24000)), (12.0,)),
}


def describe(trace: list[TraceReq]) -> str:
    return (f"{len(trace)} requests, {sum(len(t.prompt) for t in trace)} prompt tokens, "
            f"{sum(len(t.output) for t in trace)} output tokens, last arrival at step {trace[-1].arrival}")


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


def _vllm_side(cls, shape, budget, args, **variant):
    return cls(shape, budget, max_model_len=shape.max_context, token_budget=args.token_budget,
               hash_algo=args.vllm_hash, **variant)


def _makers(vllm_cls, shape, budget, plan, interval, args):
    """(label, factory) per column: both defaults, then the labelled variants."""
    out = [lambda: _vllm_side(vllm_cls, shape, budget, args),
           lambda: JengaSide(plan, interval, token_budget=args.token_budget)]
    if args.variants:
        out += [lambda: _vllm_side(vllm_cls, shape, budget, args, reserve_full_isl=False),
                lambda: _vllm_side(vllm_cls, shape, budget, args, retention=None),
                lambda: JengaSide(plan, interval, token_budget=args.token_budget, scheduler_rules=False)]
    return out


def _rows(results: list[Result]) -> list[tuple[str, list[str]]]:
    def each(fn) -> list[str]:
        return [fn(r) for r in results]

    def gib(b: float) -> str:
        return f"{b / GIB:.2f} GiB"

    rows = [
        ("usable pool", each(lambda r: gib(r.pool_bytes))),
        ("steps to drain the trace", each(lambda r: str(r.steps))),
        ("utilisation when memory binds (needed / pool)", each(
            lambda r: "never bound" if r.util_bound is None
            else f"{100 * r.util_bound:.1f}% ({r.bound_steps} steps)")),
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
        ("recomputed tokens", each(lambda r: str(r.recomputed_tokens))),
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
    p.add_argument("--traces", default=",".join(TRACES), help="comma list of: " + ", ".join(
        f"{k} ({v[1]}: {v[0]}, {'/'.join(f'{g:g}' for g in v[3])} GiB)" for k, v in TRACES.items()))
    p.add_argument("--budget-gib", type=float, default=None, help="one KV budget for every trace "
                   "(default: each trace's own, listed above)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=8192, help="tokens computed per step (vLLM's "
                   "max_num_batched_tokens)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="replays per column; the fastest one's timings are shown")
    p.add_argument("--no-variants", dest="variants", action="store_false",
                   help="only the two defaults (no vLLM first-chunk / dense-retention, no bare-driver Jenga column)")
    p.add_argument("--vllm-hash", default="sha256", help="vLLM prefix_caching_hash_algo (default: vLLM's)")
    p.add_argument("--jenga-mamba-interval", type=int, default=None,
                   help="tokens between Jenga's cached Mamba checkpoints (default: the MemoryManager's "
                        "auto rule, memory/checkpoint_interval.py: 1024 on Jamba-1.5-Mini)")
    args = p.parse_args(argv)
    for key in args.traces.split(","):
        if key not in TRACES:
            p.error(f"--traces: unknown trace {key!r}; choose from {', '.join(TRACES)}")
    if (args.budget_gib is not None and args.budget_gib <= 0) or (
            args.jenga_mamba_interval is not None and args.jenga_mamba_interval <= 0) or min(
            args.token_budget, args.max_num_seqs, args.repeats) <= 0:
        p.error("--budget-gib, --token-budget, --max-num-seqs, --jenga-mamba-interval and --repeats must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    vllm_cls = _load_vllm_side()
    print(f"{args.token_budget} tokens/step, max {args.max_num_seqs} running, seed {args.seed}")
    for key in args.traces.split(","):
        what, preset, build, budgets = TRACES[key]
        trace = build(args.seed)
        shape = get_preset(preset)
        for gib in (args.budget_gib,) if args.budget_gib else budgets:
            budget = int(gib * GIB)
            plan = build_plan(shape, budget, allocator="jenga")
            print(f"\n== {key}: {what}; {shape.name}, KV budget {gib:g} GiB\ntrace: {describe(trace)}")
            print(f"vllm : {_vllm_side(vllm_cls, shape, budget, args).describe()}")
            print("jenga: " + plan.describe().replace("\n", "\n       "))
            interval = args.jenga_mamba_interval or default_mamba_interval(plan)
            if any(g.spec.state_bytes for g in plan.groups):
                print(f"jenga: Mamba checkpoint every {interval} tokens")
            need = NeedMeter(plan)
            results = [best_of(make, trace, args, need) for make in _makers(vllm_cls, shape, budget, plan,
                                                                           interval, args)]
            print(report(results))
    return 0


def best_of(make, trace: list[TraceReq], args, need: NeedMeter) -> Result:
    """Run `args.repeats` times on fresh managers; the replay is deterministic
    (checked), so only the timings vary: keep the fastest run's."""
    runs = []
    for _ in range(args.repeats):
        side = make()
        gc.collect()
        runs.append(run(side, trace, args.token_budget, args.max_num_seqs, need))
    for r in runs[1:]:
        if (r.steps, r.sum_used, r.hit_tokens, r.preemptions) != (runs[0].steps, runs[0].sum_used,
                                                                   runs[0].hit_tokens, runs[0].preemptions):
            raise RuntimeError(f"{side.name}: two replays of one trace differ; the comparison is not deterministic")
    return min(runs, key=lambda r: sum(r.seconds.values()))


if __name__ == "__main__":
    sys.exit(main())
