"""Check the Triton paged-decode kernel against the portable path on a GPU.

Usage (on a machine with CUDA and triton):
    PYTHONPATH=src python scripts/gpu_check_attention.py
    PYTHONPATH=src python scripts/gpu_check_attention.py --interpret   # CPU smoke run, TRITON_INTERPRET=1

For fp32 and bf16 and each attention variant (plain, GQA, sliding window
with released NO_PAGE pages, chunked-local, soft-capping, sinks, a window
narrower than the group's), it builds a pool whose unwritten bytes are NaN,
scatters pages, runs one decode batch through `paged_attention` with
backend="portable" and backend="triton", and compares them; then it times
both on a larger decode batch.  Exits 1 if any comparison fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from math import lcm


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interpret", action="store_true", help="run on CPU under TRITON_INTERPRET=1, small shapes")
    return ap.parse_args()


ARGS = parse()
if ARGS.interpret:
    os.environ["TRITON_INTERPRET"] = "1"   # before triton is imported

import torch  # noqa: E402

from jenga.memory.plan import Group, MemoryPlan  # noqa: E402
from jenga.memory.spec import LayerSpec  # noqa: E402
from jenga.model.attention import paged_attention, triton_available  # noqa: E402
from jenga.model.attn_metadata import build_group_metadata, first_needed  # noqa: E402
from jenga.model.kv_pool import KVPool  # noqa: E402
from jenga.sched.params import SamplingParams  # noqa: E402
from jenga.sched.step import NO_PAGE, SeqStep, StepPlan  # noqa: E402

TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}


def setup(ctx_lens, hkv, hq, d, page, window, chunk, dtype, device, seed=0):
    """A one-group pool with decode seqs of the given context lengths."""
    g = torch.Generator().manual_seed(seed)
    gd = torch.Generator(device=device).manual_seed(seed)   # bulk randoms made on the device
    kind = "sliding" if window else "chunked" if chunk else "full"
    spec = LayerSpec(kind, {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype], hkv, d,
                     window=window, chunk=chunk)
    pages_needed = sum(-(-n // page) for n in ctx_lens) + 8
    small = page * spec.bytes_per_token
    large = lcm(small, 4096)
    plan = MemoryPlan((Group(0, spec, (0,), page, small, large // small),), large,
                      -(-pages_needed * small // large))
    pool = KVPool(plan, device)
    if dtype == torch.float32:
        pool.buffer.view(torch.float32).fill_(float("nan"))
    else:
        pool.buffer.view(torch.bfloat16).fill_(float("nan"))
    k_cache, v_cache = pool.kv_view(0)
    free = torch.randperm(plan.num_small_pages(0), generator=g).tolist()
    seqs = []
    for r, n in enumerate(ctx_lens):
        start = n - 1
        lo = first_needed(start, window, chunk) // page
        table = [NO_PAGE if i < lo else free.pop() for i in range(-(-n // page))]
        live = torch.tensor([p for p in table if p != NO_PAGE], device=device)
        k_cache[live] = torch.randn(len(live), page, hkv, d, generator=gd, device=device).to(dtype)
        v_cache[live] = torch.randn(len(live), page, hkv, d, generator=gd, device=device).to(dtype)
        seqs.append(SeqStep(f"r{r}", (0,), start, (tuple(table),), True, SamplingParams(temperature=0.0), n))
    meta = build_group_metadata(StepPlan(0, tuple(seqs)), plan.groups[0], torch.device(device))
    B = len(ctx_lens)
    q = torch.randn(B, hq, d, generator=g).to(device, dtype)
    k = torch.randn(B, hkv, d, generator=g).to(device, dtype)
    v = torch.randn(B, hkv, d, generator=g).to(device, dtype)
    sinks = torch.randn(hq, generator=g).to(device, dtype)
    return meta, k_cache, v_cache, q, k, v, sinks


def run(meta, k_cache, v_cache, q, k, v, sinks, backend, **kw):
    use_sinks = kw.pop("use_sinks", False)
    return paged_attention(q, k, v, k_cache, v_cache, meta, scale=q.shape[-1] ** -0.5,
                           sinks=sinks if use_sinks else None, backend=backend, **kw)


def check(device: str) -> bool:
    small = ARGS.interpret
    ctx = [1, 7, 33, 64, 65, 300] if small else [1, 17, 250, 1024, 1025, 3000, 4097, 63]
    hkv, d, page = (2, 16, 4) if small else (8, 128, 16)
    cases = {
        "plain_mha": dict(hq=hkv),
        "gqa": dict(hq=4 * hkv),
        "sliding_released": dict(hq=4 * hkv, window=24 if small else 512, kw=dict(window=24 if small else 512)),
        "chunked": dict(hq=4 * hkv, chunk=32 if small else 1024, kw=dict(chunk=32 if small else 1024)),
        "softcap": dict(hq=4 * hkv, kw=dict(softcap=5.0)),
        "sinks_sliding": dict(hq=4 * hkv, window=40 if small else 128,
                              kw=dict(window=40 if small else 128, use_sinks=True)),
        "narrow_window": dict(hq=4 * hkv, kw=dict(window=10 if small else 100)),
    }
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        for name, c in cases.items():
            args = setup(ctx, hkv, c["hq"], d, page, c.get("window", 0), c.get("chunk", 0), dtype, device)
            ref = run(*args, "portable", **dict(c.get("kw", {})))
            out = run(*args, "triton", **dict(c.get("kw", {})))
            err = (out.float() - ref.float()).abs().max().item()
            good = err < TOL[dtype] and not torch.isnan(out).any().item()
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} {str(dtype):15s} {name:18s} max|triton-portable| = {err:.2e}")
    return ok


def bench(device: str) -> None:
    if ARGS.interpret:
        return
    for B, n in ((64, 4096), (256, 1024)):
        meta, k_cache, v_cache, q, k, v, sinks = setup([n] * B, 8, 32, 128, 16, 0, 0, torch.bfloat16, device)
        for backend in ("portable", "triton"):
            for _ in range(3):
                run(meta, k_cache, v_cache, q, k, v, sinks, backend)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(20):
                run(meta, k_cache, v_cache, q, k, v, sinks, backend)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t) / 20 * 1e3
            kv_bytes = B * n * 8 * 128 * 2 * 2   # K and V, bf16
            gbs = kv_bytes / (ms / 1e3) / 1e9
            name = torch.cuda.get_device_name()
            peak = 4800.0 if "H200" in name else 3350.0   # HBM GB/s (H200, else H100 SXM)
            print(f"bench bf16 B={B} ctx={n} Hq=32 Hkv=8 D=128 {backend:8s}: {ms:.3f} ms/layer, "
                  f"{gbs:.0f} GB/s of KV read = {100 * gbs / peak:.0f}% of {name}'s {peak:.0f} GB/s peak")


def end_to_end(device: str) -> bool:
    """A tiny random Mistral (sliding window 8, pages of 4, released pages
    reused) decoding 3 prompts through ModelRunner: backend "triton" against
    "portable" (fp32, logits to 1e-3) and a bf16 smoke run (finite logits)."""
    import tempfile

    import transformers as tf

    from jenga.engine.runner import ModelRunner
    from jenga.model.loader import load_model
    cfg = tf.MistralConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                           max_position_embeddings=512)
    path = tempfile.mkdtemp()
    torch.manual_seed(0)
    tf.MistralForCausalLM(cfg).save_pretrained(path)
    ok = True
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model(path, device, dtype)
        spec = LayerSpec("sliding", "float32" if dtype == torch.float32 else "bfloat16", 2, 16, window=8)
        small = 4 * spec.bytes_per_token * 2
        plan = MemoryPlan((Group(0, spec, (0, 1), 4, small // 2, 1),), small, 256)
        logits = {}
        for backend in ("portable", "triton"):
            runner = ModelRunner(model, KVPool(plan, device), plan, backend=backend)
            tables, free, done, last, outs = {}, list(range(256))[::-1], {}, {}, []
            prompts = {"a": list(range(3, 16)), "b": list(range(40, 62)), "c": list(range(100, 130))}
            for step in range(17):
                seqs = []
                for r, prompt in prompts.items():
                    toks = prompt if step == 0 else [last[r]]
                    start = done.get(r, 0)
                    table = tables.setdefault(r, [])
                    while len(table) * 4 < start + len(toks):
                        table.append(free.pop())
                    for i in range(first_needed(start, 8, 0) // 4):
                        if table[i] != NO_PAGE:
                            free.append(table[i])
                            table[i] = NO_PAGE
                    seqs.append(SeqStep(r, tuple(toks), start, (tuple(table),), True,
                                        SamplingParams(temperature=0.0), start + len(toks)))
                    done[r] = start + len(toks)
                out = runner.forward(StepPlan(step, tuple(seqs)))
                outs.append(out.logits)
                last = {r: int(row.argmax()) for r, row in zip(out.req_ids, out.logits)}
            logits[backend] = torch.stack(outs)
        err = (logits["triton"] - logits["portable"]).abs().max().item()
        good = bool(torch.isfinite(logits["triton"]).all()) and (err < 1e-3 or dtype == torch.bfloat16)
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} end-to-end {str(dtype):15s} max|logits triton-portable| = {err:.2e}")
    return ok


def main() -> int:
    if not triton_available():
        print("triton is not installed")
        return 2
    device = "cpu" if ARGS.interpret else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device (use --interpret for a CPU smoke run)")
        return 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        print(torch.cuda.get_device_name(), "torch", torch.__version__)
    ok = check(device)
    ok &= end_to_end(device)
    bench(device)
    print("ALL OK" if ok else "FAILURES")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
