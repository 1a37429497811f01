"""Two CPU latency checks of issue 12 on one model (default: SmolLM2-135M, real weights).

1. First token of one long prompt (`--ttft-prompt`, default 2,000 tokens):
   Jenga `LLM.generate(max_tokens=1)` with the whole prompt in one chunk
   (the causal fast path) and in 512-token chunks, against transformers
   `generate(max_new_tokens=1)` with SDPA; interleaved, medians of
   `--repeat`.
2. A decode step at batch `--batch` (default 64): requests of `--context`
   prompt tokens are prefilled, then `--steps` all-decode engine steps are
   timed; the model's forward is timed by forward hooks on the model
   module (observation, no patching), so `step - forward` is everything
   else the engine does (scheduler, memory manager, metadata, sampler).

A program, not a test:  PYTHONPATH=src python scripts/bench_cpu_step.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def jenga_ttft(llm, prompt, params) -> float:
    t0 = time.perf_counter()
    llm.generate([prompt], params)
    return time.perf_counter() - t0


def hf_ttft(hf, prompt) -> float:
    from transformers import GenerationConfig
    cfg = GenerationConfig(max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=0)
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    with torch.no_grad():
        hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
    return time.perf_counter() - t0


def ttft(model, n: int, repeat: int, threads: int) -> None:
    from transformers import AutoModelForCausalLM

    from jenga.engine.llm import LLM
    from jenga.sched.params import SamplingParams
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    engines = {f"jenga, one {n}-token chunk": LLM(str(model), max_num_batched_tokens=max(n, 2048),
                                                  enable_prefix_caching=False, cpu_threads=threads),
               "jenga, 512-token chunks": LLM(str(model), max_num_batched_tokens=512,
                                              enable_prefix_caching=False, cpu_threads=threads)}
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="sdpa")
    vocab = hf.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, vocab, (n,), generator=g).tolist() for _ in range(repeat + 1)]
    times: dict[str, list[float]] = {k: [] for k in (*engines, "transformers generate (sdpa)")}
    for r, prompt in enumerate(prompts):   # the first round warms up, untimed
        for name, llm in engines.items():
            dt = jenga_ttft(llm, prompt, params)
            if r:
                times[name].append(dt)
        dt = hf_ttft(hf, prompt)
        if r:
            times["transformers generate (sdpa)"].append(dt)
    hf_med = statistics.median(times["transformers generate (sdpa)"])
    print(f"\n### First token of a {n}-token prompt ({threads} thread(s), medians of {repeat}, interleaved)\n")
    print("| engine | seconds (median) | runs | vs transformers |\n|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {', '.join(f'{t:.3f}' for t in ts)} | {med / hf_med:.2f}x |")


def decode_step(model, batch: int, context: int, steps: int, threads: int) -> None:
    from jenga.engine.llm import LLM
    from jenga.sched.params import SamplingParams
    llm = LLM(str(model), max_num_seqs=batch, max_num_batched_tokens=2048, enable_prefix_caching=False,
              cpu_threads=threads)
    e = llm.engine
    fwd, t_in = [], [0.0]
    module = e.runner.model
    module.register_forward_pre_hook(lambda *_: t_in.__setitem__(0, time.perf_counter()))
    module.register_forward_hook(lambda *_: fwd.append(time.perf_counter() - t_in[0]))
    g = torch.Generator().manual_seed(1)
    params = SamplingParams(max_tokens=steps + 8, temperature=0.0, ignore_eos=True)
    for i in range(batch):
        e.add_request(f"r{i}", torch.randint(0, e.vocab_size, (context,), generator=g).tolist(), params)
    while e.scheduler.waiting or any(r.num_computed < r.prompt_len for r in e.scheduler.running):
        e.step()
    e.step()   # the first all-decode step, untimed
    fwd.clear()
    step_s = []
    for _ in range(steps):
        t0 = time.perf_counter()
        e.step()
        step_s.append(time.perf_counter() - t0)
    s, f = statistics.median(step_s), statistics.median(fwd)
    print(f"\n### Decode step at batch {batch} ({context}-token prompts, {threads} thread(s), median of {steps})\n")
    print("| step ms | model forward ms | non-model ms | non-model share |\n|---|---|---|---|")
    print(f"| {s * 1e3:.1f} | {f * 1e3:.1f} | {(s - f) * 1e3:.1f} | {100 * (s - f) / s:.1f}% |")
    while e.has_unfinished_requests():
        e.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF folder or builtin:NAME (default: the converted SmolLM2)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ttft-prompt", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--skip", default="", help="comma-separated: ttft, step")
    a = ap.parse_args()
    from jenga.bench.throughput import resolve
    from jenga.model.gguf_convert import default_model_path
    model = resolve(a.model) if a.model else default_model_path()
    torch.set_num_threads(a.threads)
    print(f"model {a.model or model}, load average {open('/proc/loadavg').read().split()[:3]}")
    if "ttft" not in a.skip:
        ttft(model, a.ttft_prompt, a.repeat, a.threads)
    if "step" not in a.skip:
        decode_step(model, a.batch, a.context, a.steps, a.threads)
    print(f"\nload average after {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
