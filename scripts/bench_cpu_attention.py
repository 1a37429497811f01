"""Attention alone on CPU: the cpu backend against the portable path and dense SDPA.

For each shape (SmolLM2-135M, the built-in Gemma-2 and Ministral shapes)
it builds one layer's pool with scattered pages (NaN-poisoned like the
tests), a decode batch of `--batch` seqs with contexts of `--context`
tokens, and a prefill chunk after a cached prefix, and times
`paged_attention` with backend portable and cpu, interleaved with dense
SDPA on contiguous [B, Hkv, L, D] K/V (what transformers' `generate`
attends over, without its padding mask: the floor).  Medians of `--repeat`
rounds; the load average is printed.  A program, not a test:

    PYTHONPATH=src python scripts/bench_cpu_attention.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from jenga.memory.plan import MemoryPlan  # noqa: F401  (import order: memory before model)
from jenga.model.attention import paged_attention
from jenga.model.attn_metadata import build_group_metadata
from jenga.model.kv_pool import KVPool
from jenga.sched.params import SamplingParams
from jenga.sched.step import SeqStep, StepPlan

# name: (q heads, kv heads, head dim, window, softcap, scale)
SHAPES = {
    "smollm2-135m": (9, 3, 64, 0, 0.0, 64 ** -0.5),
    "gemma2-small (full layer)": (4, 2, 64, 0, 50.0, 64 ** -0.5),
    "gemma2-small (sliding layer)": (4, 2, 64, 128, 50.0, 64 ** -0.5),
    "ministral-small (sliding layer)": (8, 2, 64, 128, 0.0, 64 ** -0.5),
}


def one_layer_pool(hkv: int, d: int, window: int, page_tokens: int, pages: int):
    from jenga.memory.planner import build_plan
    from jenga.memory.spec import LayerSpec
    spec = LayerSpec("sliding" if window else "full", "float32", hkv, d, window=window)
    per_page = page_tokens * 2 * hkv * d * 4
    plan = build_plan([spec], pages * per_page, allocator="jenga", page_tokens=page_tokens)
    pool = KVPool(plan)
    pool.buffer.view(torch.float32).fill_(float("nan"))
    return plan, pool


def step_for(seqs: list[tuple[int, int]], plan, page_tokens: int, gen: torch.Generator) -> StepPlan:
    free = torch.randperm(plan.num_small_pages(0), generator=gen).tolist()
    steps = []
    for r, (start, n) in enumerate(seqs):
        L = start + n
        table = tuple(free.pop() for _ in range((L + page_tokens - 1) // page_tokens))
        steps.append(SeqStep(f"r{r}", tuple(range(n)), start, (table,), True, SamplingParams(), L))
    return StepPlan(0, tuple(steps))


def timed(fn, reps: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def bench_shape(name, shape, seqs, repeat, reps, page_tokens=16):
    hq, hkv, d, window, softcap, scale = shape
    gen = torch.Generator().manual_seed(0)
    total = sum(s + n for s, n in seqs)
    plan, pool = one_layer_pool(hkv, d, window, page_tokens, total // page_tokens + 2 * len(seqs) + 8)
    k_cache, v_cache = pool.kv_view(0)
    step = step_for(seqs, plan, page_tokens, gen)
    meta = build_group_metadata(step, plan.groups[0], torch.device("cpu"))
    T = sum(n for _, n in seqs)
    q, k, v = torch.randn(T, hq, d), torch.randn(T, hkv, d), torch.randn(T, hkv, d)
    for s in step.seqs:   # the cached context, written once
        for p in range(s.start):
            k_cache[s.page_tables[0][p // page_tokens], p % page_tokens] = torch.randn(hkv, d)
            v_cache[s.page_tables[0][p // page_tokens], p % page_tokens] = torch.randn(hkv, d)
    B, L = len(seqs), max(s + n for s, n in seqs)
    n_new = seqs[0][1]
    if window:   # a dense sliding cache keeps only the window (transformers' sliding layers do)
        L = min(L, window + n_new - 1)
    qd = torch.randn(B, hq, n_new, d)
    kd, vd = torch.randn(B, hkv, L, d), torch.randn(B, hkv, L, d)
    dense_mask = None
    if n_new > 1:   # the chunk's rows over its keys: causal, and the window's band
        qp, kp = torch.arange(L - n_new, L)[:, None], torch.arange(L)[None, :]
        dense_mask = (kp <= qp) & ((kp > qp - window) if window else True)

    def run(backend):
        return lambda: paged_attention(q, k, v, k_cache, v_cache, meta, scale=scale, window=window,
                                       softcap=softcap, backend=backend)

    def dense():
        if softcap:   # SDPA has no soft-cap: explicit scores, as transformers' eager path
            s = torch.einsum("bhqd,bhkd->bhqk", qd.view(B, hkv, hq // hkv * n_new, d), kd) * scale
            s = torch.tanh(s / softcap) * softcap
            if dense_mask is not None:
                s = s.view(B, hkv, hq // hkv, n_new, L).masked_fill(~dense_mask, float("-inf")).view_as(s)
            return torch.softmax(s, -1) @ vd
        return F.scaled_dot_product_attention(qd, kd, vd, attn_mask=dense_mask, scale=scale,
                                              enable_gqa=hq != hkv)

    out_cpu, out_portable = run("cpu")(), run("portable")()
    err = (out_cpu - out_portable).abs().max().item()
    times = {"portable": [], "cpu": [], "dense": []}
    for _ in range(repeat):   # interleaved rounds
        times["portable"].append(timed(run("portable"), reps))
        times["cpu"].append(timed(run("cpu"), reps))
        times["dense"].append(timed(dense, reps))
    med = {key: statistics.median(val) * 1e3 for key, val in times.items()}
    print(f"| {name} | {B} x ({seqs[0][0]} + {n_new}) | {med['portable']:.3f} | {med['cpu']:.3f} | "
          f"{med['dense']:.3f} | {med['cpu'] / med['dense']:.2f}x | {med['portable'] / med['cpu']:.2f}x | {err:.1e} |")


def crossover(shape, prefix: int, chunks: list[int], repeat: int, reps: int, page_tokens: int = 16) -> None:
    """The kernel against the gather path on one seq's chunk of Q queries
    after `prefix` cached tokens: where KERNEL_MAX_QUERIES should sit."""
    from jenga.model import cpu_attention
    from jenga.model.attention import LayerAttn
    hq, hkv, d, window, softcap, scale = shape
    layer = LayerAttn(scale, window, 0, softcap)
    for n in chunks:
        plan, pool = one_layer_pool(hkv, d, window, page_tokens, (prefix + n) // page_tokens + 8)
        k_cache, v_cache = pool.kv_view(0)
        k_cache.normal_(), v_cache.normal_()
        step = step_for([(prefix, n)], plan, page_tokens, torch.Generator().manual_seed(0))
        meta = build_group_metadata(step, plan.groups[0], torch.device("cpu"))
        b = meta.batches[0]
        q, out = torch.randn(n, hq, d), torch.empty(n, hq, d)
        kernel = lambda: cpu_attention.kernel_batch(out, q, k_cache, v_cache, b, layer)   # noqa: E731
        gather = lambda: cpu_attention.gather_batch(out, q, k_cache, v_cache, b, meta, layer)   # noqa: E731
        tk, tg = [], []
        for _ in range(repeat):
            tk.append(timed(kernel, reps))
            tg.append(timed(gather, reps))
        # the fastest round: on a loaded box a round of ~0.1 ms calls that
        # loses its time slice reads 10 ms, which a median of 5 does not hide
        mk, mg = min(tk) * 1e3, min(tg) * 1e3
        print(f"| {prefix} + {n} | {mk:.3f} | {mg:.3f} | {mk / mg:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=256, help="cached tokens per decoding seq")
    ap.add_argument("--prefill", default="1536+512", help="PREFIX+CHUNK of the prefill case")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5, help="calls per timing")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--crossover", default="", help="e.g. 256:4,8,16,32,64: kernel vs gather for chunks after a "
                    "prefix, on the first shape, instead of the table")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from jenga.model import cpu_kernel
    if cpu_kernel.load() is None:
        print("cpu kernel unavailable:", cpu_kernel.unavailable_reason())
    print(f"threads {a.threads}, load average {open('/proc/loadavg').read().split()[:3]}")
    print("| shape | seqs x (cached + new) | portable ms | cpu ms | dense SDPA ms | cpu / dense | "
          "portable / cpu | max abs diff cpu vs portable |")
    print("|---|---|---|---|---|---|---|---|")
    if a.crossover:
        pre, _, qs = a.crossover.partition(":")
        print("| cached + chunk | kernel ms (best round) | gather + SDPA ms (best round) | kernel / gather |\n"
              "|---|---|---|---|")
        crossover(SHAPES[a.shapes.split(",")[0]], int(pre), [int(x) for x in qs.split(",")], a.repeat, a.reps)
        return
    prefix, chunk = (int(x) for x in a.prefill.split("+"))
    for name in a.shapes.split(","):
        bench_shape(name, SHAPES[name], [(a.context, 1)] * a.batch, a.repeat, a.reps)
        bench_shape(name, SHAPES[name], [(prefix, chunk)], a.repeat, max(1, a.reps // 2))
    print(f"load average after {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
