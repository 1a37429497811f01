"""Check the Triton attention kernels and decode CUDA graphs on a GPU.

Usage (on a machine with CUDA and triton; about a minute on an H100):
    PYTHONPATH=src python scripts/gpu_check_attention.py [--json OUT.json]
    PYTHONPATH=src python scripts/gpu_check_attention.py --interpret   # CPU dry run, TRITON_INTERPRET=1

1. Kernels against the portable path, fp32 and bf16, on pools whose
   unwritten bytes are NaN with scattered pages: decode batches and varlen
   prefill steps (fresh prompts, chunks over a cached prefix, decodes mixed
   in) for plain MHA, GQA, sliding windows with released NO_PAGE pages,
   chunked-local, soft-capping, sinks and a window narrower than the group's.
2. A tiny random Mistral (sliding window 8 on pages of 4, so pages are
   released and reused) decoding 3 prompts through ModelRunner with the
   portable path, the Triton path, and the Triton path with decode CUDA
   graphs (captured; padded buffers run eagerly under --interpret): logits
   against portable.  On CUDA, one eager decode step and one prefill step
   run under torch.cuda.set_sync_debug_mode("error"): no host sync.
3. Timings (not under --interpret): the decode kernel's achieved KV read
   bandwidth against the GPU's HBM peak, and the prefill kernel against the
   portable path (gather + SDPA).
Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from math import lcm


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interpret", action="store_true", help="run on CPU under TRITON_INTERPRET=1, tiny shapes")
    ap.add_argument("--json", default=None, help="also write the results here")
    return ap.parse_args()


ARGS = parse()
if ARGS.interpret:
    os.environ["TRITON_INTERPRET"] = "1"   # before any kernel module is imported

import torch  # noqa: E402

from jenga.memory.plan import Group, MemoryPlan  # noqa: E402
from jenga.memory.spec import LayerSpec  # noqa: E402
from jenga.model.attention import paged_attention, triton_available  # noqa: E402
from jenga.memory.policies import first_key  # noqa: E402
from jenga.model.attn_metadata import build_group_metadata  # noqa: E402
from jenga.model.kv_pool import KVPool  # noqa: E402
from jenga.sched.params import SamplingParams  # noqa: E402
from jenga.sched.step import NO_PAGE, SeqStep, StepPlan  # noqa: E402

TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
GREEDY = SamplingParams(temperature=0.0)
RESULTS: dict[str, object] = {"checks": [], "bench": []}


def setup(seqs, hkv, hq, d, page, window, chunk, dtype, device, seed=0):
    """A one-group pool holding seqs (start, new tokens): the cached prefix
    in scope is written, everything else is NaN.  Returns the metadata,
    caches, and q, k, v of the new tokens, and per-head sinks."""
    g = torch.Generator().manual_seed(seed)
    gd = torch.Generator(device=device).manual_seed(seed)   # bulk randoms made on the device
    kind = "sliding" if window else "chunked" if chunk else "full"
    spec = LayerSpec(kind, DTYPE_NAMES[dtype], hkv, d, window=window, chunk=chunk)
    pages_needed = sum(-(-(s + n) // page) for s, n in seqs) + 8
    small = page * spec.bytes_per_token
    large = lcm(small, 4096)
    plan = MemoryPlan((Group(0, spec, (0,), page, small, large // small),), large,
                      -(-pages_needed * small // large))
    pool = KVPool(plan, device)
    pool.buffer.view(dtype).fill_(float("nan"))
    k_cache, v_cache = pool.kv_view(0)
    free = torch.randperm(plan.num_small_pages(0), generator=g).tolist()
    steps = []
    for r, (start, n) in enumerate(seqs):
        lo = first_key(spec, start) // page
        table = [NO_PAGE if i < lo else free.pop() for i in range(-(-(start + n) // page))]
        live = torch.tensor([p for p in table[:-(-start // page)] if p != NO_PAGE], device=device,
                            dtype=torch.long)
        if len(live):
            k_cache[live] = torch.randn(len(live), page, hkv, d, generator=gd, device=device).to(dtype)
            v_cache[live] = torch.randn(len(live), page, hkv, d, generator=gd, device=device).to(dtype)
        steps.append(SeqStep(f"r{r}", tuple(range(n)), start, (tuple(table),), True, GREEDY, start + n))
    meta = build_group_metadata(StepPlan(0, tuple(steps)), plan.groups[0], torch.device(device))
    T = sum(n for _, n in seqs)
    q = torch.randn(T, hq, d, generator=g).to(device, dtype)
    k = torch.randn(T, hkv, d, generator=g).to(device, dtype)
    v = torch.randn(T, hkv, d, generator=g).to(device, dtype)
    sinks = torch.randn(hq, generator=g).to(device, dtype)
    return meta, k_cache, v_cache, q, k, v, sinks


def run(meta, k_cache, v_cache, q, k, v, sinks, backend, use_sinks=False, **kw):
    return paged_attention(q, k, v, k_cache, v_cache, meta, scale=q.shape[-1] ** -0.5,
                           sinks=sinks if use_sinks else None, backend=backend, **kw)


def record(ok: bool, what: str, err: float) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {what} max|diff| = {err:.2e}", flush=True)
    RESULTS["checks"].append({"check": what, "ok": ok, "max_abs_diff": err})
    return ok


def kernels(device: str) -> bool:
    tiny = ARGS.interpret
    hkv, d, page = (2, 16, 4) if tiny else (8, 128, 16)
    steps = {
        "decode": [(0, 1), (6, 1), (32, 1)] if tiny else [(0, 1), (16, 1), (249, 1), (1023, 1), (3000, 1), (4096, 1)],
        "prefill": [(0, 9), (11, 6), (5, 1)] if tiny else [(0, 700), (1500, 300), (4000, 1), (60, 17), (0, 5)],
    }
    w, c, nw = (6, 8, 3) if tiny else (512, 1024, 100)
    cases = {
        "plain_mha": dict(hq=hkv),
        "gqa": dict(hq=4 * hkv),
        "sliding_released": dict(hq=4 * hkv, window=w, kw=dict(window=w)),
        "chunked": dict(hq=4 * hkv, chunk=c, kw=dict(chunk=c)),
        "softcap": dict(hq=4 * hkv, kw=dict(softcap=5.0)),
        "sinks_sliding": dict(hq=4 * hkv, window=w, kw=dict(window=w, use_sinks=True)),
        "narrow_window": dict(hq=4 * hkv, kw=dict(window=nw)),
    }
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        for kind, seqs in steps.items():
            for name, cs in cases.items():
                if tiny and name not in (("gqa",) if dtype == torch.bfloat16 else ("gqa", "sliding_released")):
                    continue      # the interpreter is slow: the unit tests cover the rest on CPU
                args = setup(seqs, hkv, cs["hq"], d, page, cs.get("window", 0), cs.get("chunk", 0), dtype, device)
                ref = run(*args, "portable", **cs.get("kw", {}))
                out = run(*args, "triton", **cs.get("kw", {}))
                err = (out.float() - ref.float()).abs().max().item()
                ok &= record(err < TOL[dtype] and not torch.isnan(out).any().item(),
                             f"{kind:7s} {DTYPE_NAMES[dtype]:8s} {name:16s}", err)
    return ok


def tiny_mistral(device: str, dtype: torch.dtype):
    import tempfile

    import transformers as tf

    from jenga.model.loader import load_model
    cfg = tf.MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                           max_position_embeddings=512)
    path = tempfile.mkdtemp()
    torch.manual_seed(0)
    tf.MistralForCausalLM(cfg).save_pretrained(path)
    return load_model(path, device, dtype)


WINDOW8 = LayerSpec("sliding", "float32", 1, 1, window=8)   # the scope decode_run's pages follow


def decode_run(runner, steps: int = 9):
    """3 prompts prefilled, then decoded greedily; window 8 on pages of 4,
    released pages reused.  Returns the logits of every step stacked."""
    tables, free, done, last, outs = {}, list(range(256))[::-1], {}, {}, []
    prompts = {"a": list(range(3, 16)), "b": list(range(40, 62)), "c": list(range(100, 130))}
    for step in range(steps):
        seqs = []
        for r, prompt in prompts.items():
            toks = prompt if step == 0 else [last[r]]
            start = done.get(r, 0)
            table = tables.setdefault(r, [])
            while len(table) * 4 < start + len(toks):
                table.append(free.pop())
            for i in range(first_key(WINDOW8, start) // 4):
                if table[i] != NO_PAGE:
                    free.append(table[i])
                    table[i] = NO_PAGE
            seqs.append(SeqStep(r, tuple(toks), start, (tuple(table),), True, GREEDY, start + len(toks)))
            done[r] = start + len(toks)
        out = runner.forward(StepPlan(step, tuple(seqs)))
        outs.append(out.logits)
        last = {r: int(row.argmax()) for r, row in zip(out.req_ids, out.logits)}
    return torch.stack(outs)


def end_to_end(device: str) -> bool:
    from jenga.engine.runner import ModelRunner
    from jenga.model.cuda_graphs import CudaGraphConfig
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        if ARGS.interpret and dtype == torch.bfloat16:
            continue
        model = tiny_mistral(device, dtype)
        spec = LayerSpec("sliding", DTYPE_NAMES[dtype], 2, 16, window=8)
        small = 4 * spec.bytes_per_token * 2
        plan = MemoryPlan((Group(0, spec, (0, 1), 4, small // 2, 1),), small, 256)
        logits = {}
        for name, kw in (("portable", dict(backend="portable")), ("triton", dict(backend="triton")),
                         ("graphs", dict(backend="triton", cuda_graphs=CudaGraphConfig(4, 512)))):
            runner = ModelRunner(model, KVPool(plan, device), plan, **kw)
            logits[name] = decode_run(runner, 3 if ARGS.interpret else 9)
            if name == "graphs":
                g = runner.graphs
                RESULTS["graphs"] = {"captured": list(g.captured), "runs": g.runs}
                print(f"     graphs: captured sizes {g.captured}, {g.runs} decode steps through them")
                ok &= g.runs == (2 if ARGS.interpret else 8) and (ARGS.interpret or g.captured == (1, 2, 4))
        for name in ("triton", "graphs"):
            err = (logits[name] - logits["portable"]).abs().max().item()
            tol = 1e-3 if dtype == torch.float32 else 0.25
            ok &= record(bool(torch.isfinite(logits[name]).all()) and err < tol,
                         f"end-to-end {DTYPE_NAMES[dtype]:8s} {name:8s} vs portable logits", err)
        if device == "cuda":
            ok &= no_sync(model, plan, device)
    return ok


def no_sync(model, plan, device) -> bool:
    """One prefill step and one decode step of the eager Triton path under
    sync debug mode "error": any host synchronisation raises."""
    from jenga.engine.runner import ModelRunner
    runner = ModelRunner(model, KVPool(plan, device), plan, backend="triton")
    table = (tuple(range(8)),)
    steps = [StepPlan(0, (SeqStep("a", tuple(range(3, 20)), 0, table, True, GREEDY, 17),)),
             StepPlan(1, (SeqStep("a", (5,), 17, table, True, GREEDY, 17),))]
    runner.forward(steps[0])          # compile outside the check
    runner.forward(steps[1])
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        for s in steps:
            runner.forward(s)
        good, msg = True, "none"
    except RuntimeError as err:
        good, msg = False, str(err).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode(0)
    print(f"{'ok  ' if good else 'FAIL'} host syncs inside an eager step: {msg}")
    RESULTS["checks"].append({"check": "no host sync in a step", "ok": good, "detail": msg})
    return good


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def bench(device: str) -> None:
    name = torch.cuda.get_device_name()
    peak = 4800.0 if "H200" in name else 3350.0   # HBM GB/s (H200, else H100 SXM)
    for B, n in ((64, 4096), (256, 1024), (32, 16384)):
        args = setup([(n - 1, 1)] * B, 8, 32, 128, 16, 0, 0, torch.bfloat16, device)
        kv_bytes = B * n * 8 * 128 * 2 * 2   # K and V, bf16
        for backend in ("portable", "triton"):
            ms = timed(lambda: run(*args, backend))
            gbs = kv_bytes / (ms / 1e3) / 1e9
            print(f"bench decode bf16 B={B} ctx={n} Hq=32 Hkv=8 D=128 {backend:8s}: {ms:.3f} ms/layer, "
                  f"{gbs:.0f} GB/s of KV read = {100 * gbs / peak:.0f}% of {name}'s {peak:.0f} GB/s peak")
            RESULTS["bench"].append({"kernel": "decode", "backend": backend, "batch": B, "ctx": n, "ms": ms,
                                     "kv_gb_per_s": gbs, "peak_gb_per_s": peak, "device": name})
    for label, seqs in (("4 fresh prompts of 2048", [(0, 2048)] * 4),
                        ("4 chunks of 512 over 4096 cached", [(4096, 512)] * 4)):
        args = setup(seqs, 8, 32, 128, 16, 0, 0, torch.bfloat16, device)
        flops = sum(4 * n * (s + n / 2) * 32 * 128 for s, n in seqs)   # QK^T and PV, causal
        for backend in ("portable", "triton"):
            ms = timed(lambda: run(*args, backend), reps=10)
            print(f"bench prefill bf16 {label} Hq=32 Hkv=8 D=128 {backend:8s}: {ms:.3f} ms/layer, "
                  f"{flops / ms / 1e9:.0f} TFLOP/s")
            RESULTS["bench"].append({"kernel": "prefill", "backend": backend, "case": label, "ms": ms,
                                     "tflop_per_s": flops / ms / 1e9, "device": name})


def main() -> int:
    if not triton_available():
        print("triton is not installed")
        return 2
    device = "cpu" if ARGS.interpret else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --interpret for a CPU dry run)")
        return 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    ok = kernels(device)
    ok &= end_to_end(device)
    if device == "cuda":
        bench(device)
    RESULTS["ok"] = bool(ok)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(RESULTS, f, indent=1)
    print("ALL OK" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
