"""`jenga plan`: groups, pages and LCM of a model, and what one request costs
under each allocator (bytes held, waste against the ideal, how many fit).
With `--max-context`, also the longest single request each allocator admits
on `--tp` x `--gpu` (the paper's Table 2: Llama 4 Scout on 8 GPUs), which
may exceed the model's own max_position_embeddings (vLLM serves past it
with VLLM_ALLOW_LONG_MAX_MODEL_LEN, as the paper's artifact does).  With
`--tp N` the plan and its bytes are one rank's (`ModelShape.per_rank`), the
plan the engine builds for `tensor_parallel_size=N`."""

from __future__ import annotations

import json
from dataclasses import asdict

from ..memory.footprint import ideal_bytes, longest_request, request_footprint, workload_static_share
from .common import resolve_shape, split_allocators


def compute(model: str, context: int | None = None, image_tokens: int | None = None, gpu: str = "H100",
            tp: int = 1, kv_bytes: int | None = None, page_tokens: int = 16,
            allocators: str = "jenga,max-page,static,uniform", kv_cache_dtype: str = "auto",
            max_context: bool = False, prefill_chunk: int = 2048) -> dict:
    """The report `jenga plan` prints, as a dict (see module doc).
    max_context adds "max_context": per allocator the longest single request
    (tokens, None when unbounded) prefilled `prefill_chunk` tokens a step;
    static is left out (its split is fitted to one request)."""
    from ..memory.planner import build_plan
    from ..sim.gpus import get_gpu
    from ..sim.simulate import default_kv_budget

    model_shape = resolve_shape(model, kv_cache_dtype)
    shape = model_shape.per_rank(tp)   # one rank's layers: the engine plans each rank's pool so
    context = shape.max_context if context is None else context
    image_tokens = shape.image_tokens_per_image if image_tokens is None else image_tokens
    if context <= 0 or context > shape.max_context:
        raise ValueError(f"--context must be in [1, {shape.max_context}] for {shape.name}, got {context}")
    if image_tokens < 0:
        raise ValueError(f"--image-tokens must be >= 0, got {image_tokens}")
    budget = kv_bytes if kv_bytes is not None else default_kv_budget(model_shape, get_gpu(gpu), tp)
    names = split_allocators(allocators)
    reference = build_plan(shape, budget, allocator="jenga", page_tokens=page_tokens)
    # static is given the split this very request needs (its best case)
    share = workload_static_share(reference, [(context, image_tokens)])
    plans = {a: build_plan(shape, budget, allocator=a, page_tokens=page_tokens,
                           static_share=share if a == "static" else None) for a in names}
    ideal = ideal_bytes(reference, context, image_tokens)
    rows = {a: request_footprint(p, context, image_tokens, ideal) for a, p in plans.items()}
    base = rows.get("jenga")
    if prefill_chunk <= 0:
        raise ValueError(f"--prefill-chunk must be > 0, got {prefill_chunk}")
    # static's split is fitted to one request, so its longest request is the
    # split's, not the pool's: left out
    longest = ({a: longest_request(p, image_tokens, prefill_chunk) for a, p in plans.items() if a != "static"}
               if max_context else None)
    return {
        "model": shape.name, "source": shape.source, "context": context, "image_tokens": image_tokens,
        "kv_budget_bytes": budget, "kv_cache_dtype": kv_cache_dtype, "gpu": gpu, "tp": tp,
        "model_max_context": shape.max_context,
        "prefill_chunk": prefill_chunk, "max_context": longest,
        "layers": _layer_counts(shape),
        "plans": {a: {"large_page_bytes": p.large_page_bytes, "num_large_pages": p.num_large_pages,
                      "groups": [{"gid": g.gid, "kind": g.spec.describe(), "layers": len(g.layers),
                                  "page_tokens": g.page_tokens, "small_page_bytes": g.small_page_bytes,
                                  "padding_bytes": g.padding_bytes, "per_large": g.per_large}
                                 for g in p.groups],
                      "choices": list(p.choices)} for a, p in plans.items()},
        "requests": {a: {**asdict(f), "waste": f.waste,
                         "fit_vs_jenga": (f.max_concurrent / base.max_concurrent) if base and base.max_concurrent else None}
                     for a, f in rows.items()},
    }


def _layer_counts(shape) -> dict[str, int]:
    counts: dict[str, int] = {}
    for spec in shape.layers:
        counts[spec.describe()] = counts.get(spec.describe(), 0) + 1
    return counts


def render(rep: dict) -> str:
    lines = [f"{rep['model']}  ({rep['source']})",
             f"request: {rep['context']} tokens + {rep['image_tokens']} image tokens; "
             f"KV budget {rep['kv_budget_bytes'] / 2**30:.2f} GiB, KV dtype {rep['kv_cache_dtype']}",
             "layers: " + ", ".join(f"{n} x {k}" for k, n in rep["layers"].items()), ""]
    for a, p in rep["plans"].items():
        lines.append(f"[{a}] large page {p['large_page_bytes']:,} B x {p['num_large_pages']:,}")
        for g in p["groups"]:
            lines.append(f"    group {g['gid']}: {g['kind']:<22} {g['layers']:>3} layers  {g['page_tokens']:>5} tok/page  "
                         f"small page {g['small_page_bytes']:>12,} B  padding {g['padding_bytes']:,} B  "
                         f"{g['per_large']} per large")
        lines += [f"    note: {c}" for c in p["choices"]]
    lines += ["", f"{'allocator':<10} {'bytes/request':>16} {'ideal':>16} {'waste':>8} {'fit':>8} {'fit vs jenga':>13}"]
    for a, r in rep["requests"].items():
        ratio = f"{r['fit_vs_jenga']:.2f}x" if r["fit_vs_jenga"] is not None else "-"
        lines.append(f"{a:<10} {r['allocated_bytes']:>16,} {r['ideal_bytes']:>16,} {100 * r['waste']:>7.2f}% "
                     f"{r['max_concurrent']:>8,} {ratio:>13}")
    if rep["max_context"] is not None:
        lines += _render_max_context(rep)
    return "\n".join(lines)


def _render_max_context(rep: dict) -> list[str]:
    longest = rep["max_context"]
    base = longest.get("jenga")
    lines = ["", f"longest single request on {rep['tp']} x {rep['gpu']} (KV budget "
             f"{rep['kv_budget_bytes'] / 1e9:.1f} GB, prefill {rep['prefill_chunk']} tokens a step; "
             f"model max_position_embeddings {rep['model_max_context']:,})",
             f"{'allocator':<10} {'max context':>16} {'jenga / this':>13}"]
    for a, n in longest.items():
        ratio = f"{base / n:.2f}x" if base and n else "-"
        lines.append(f"{a:<10} {'unbounded' if n is None else f'{n:,}':>16} {ratio:>13}")
    return lines


def main(args) -> int:
    rep = compute(args.model, args.context, args.image_tokens, args.gpu, args.tp, args.kv_bytes,
                  args.page_tokens, args.allocator, args.kv_cache_dtype, args.max_context, args.prefill_chunk)
    print(json.dumps(rep, indent=2) if args.json else render(rep))
    return 0
