"""`jenga bench throughput`: the real engine, one workload, every allocator.

The same seeded requests (random token prompts, `ignore_eos`, fixed output
length, all arriving at once, as the paper's artifact runs them) go through
`LLM.generate` once per allocator with the same KV budget in bytes; only the
memory manager changes.  For a vision-language model each request carries
`--images` random-pixel images (drawn from `--distinct-images` pictures, so
repeats can hit the encoder caches) at random places of its prompt; the
report counts encoder runs, which is where Jenga's in-pool vision cache
(encoder once per image) and max-page's out-of-pool embeddings (encoder once
per chunk reaching the image, as vLLM v0) differ.  A warm-up request runs
first on each engine, outside the timing; `--repeat` runs the allocators
in turn several times and reports each one's median run, which evens out
load from other processes on a shared machine.

Models: a local HF folder, `builtin:NAME` (bench/builtin_models.py) or
`vlm:NAME` (bench/vlm_models.py: mllama-small, llava-small).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ALLOCATORS = "jenga,max-page,static,uniform"


@dataclass(frozen=True)
class Workload:
    num_requests: int = 32
    prompt_len: int = 48
    output_len: int = 32
    images: int = 1
    distinct_images: int = 0       # 0: every image distinct
    image_size: tuple[int, int] = (96, 160)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_requests", "prompt_len", "output_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.images < 0 or self.distinct_images < 0:
            raise ValueError("images and distinct_images must be >= 0")


@dataclass(frozen=True)
class Result:
    allocator: str
    requests: int
    errors: int
    duration_s: float
    req_per_s: float
    output_tok_per_s: float
    preemptions: int
    encoder_runs: int
    images: int
    hit_rate: float
    steps: int
    refused: str = ""              # why the engine refused the workload (a request larger than the pool)
    mean_batch: float = 0.0        # running requests per step
    mem_util: float = 0.0          # needed / pool bytes over steps that left a request waiting for memory


def resolve(model: str) -> Path:
    if model.startswith("vlm:"):
        from .vlm_models import vlm_model_path
        return vlm_model_path(model[len("vlm:"):])
    from .builtin_models import resolve_model
    return resolve_model(model)


def make_prompts(w: Workload, vocab: int, image_token: int | None) -> list:
    """Seeded prompts: token ids in [0, vocab) (never the image token), and
    for a VLM `w.images` image tokens at random places plus their images."""
    import numpy as np
    import torch
    rng = np.random.default_rng(w.seed)
    pictures: dict[int, object] = {}
    prompts, drawn = [], 0
    for _ in range(w.num_requests):
        ids = [int(t) for t in rng.integers(0, vocab, w.prompt_len)]
        ids = [t if t != image_token else 0 for t in ids]
        if image_token is None or not w.images:
            prompts.append(ids)
            continue
        images = []
        for slot in sorted(rng.choice(w.prompt_len - 1, w.images, replace=False) + 1, reverse=True):
            ids.insert(int(slot), image_token)
            k = int(rng.integers(w.distinct_images)) if w.distinct_images else drawn
            drawn += 1
            if k not in pictures:
                h = int(rng.integers(w.image_size[0] // 2, w.image_size[0] + 1))
                pictures[k] = torch.from_numpy(np.random.default_rng((w.seed, k)).integers(
                    0, 256, (3, h, w.image_size[1]), dtype=np.uint8))
            images.insert(0, pictures[k])
        prompts.append({"prompt_token_ids": ids, "multi_modal_data": {"image": images}})
    return prompts


def run_one(model: Path, allocator: str, kv_bytes: int, w: Workload, **engine: object) -> Result:
    """One engine with `allocator`, the workload timed after a warm-up."""
    from ..engine.llm import LLM
    from ..sched.params import SamplingParams
    llm = LLM(str(model), allocator=allocator, kv_cache_memory=kv_bytes, **engine)
    e = llm.engine
    vision = e.vision
    prompts = make_prompts(w, e.vocab_size, vision.image_token_id if vision else None)
    params = SamplingParams(max_tokens=w.output_len, temperature=0.0, ignore_eos=True)
    llm.generate(make_prompts(Workload(1, 8, 2, min(w.images, 1), seed=w.seed + 1), e.vocab_size,
                              vision.image_token_id if vision else None), params)
    before = e.stats()
    batches, utils = [], []
    plain_step = e.step

    def observed_step():   # what each step ran and, when memory bound it, how full the pool was
        outs = plain_step()
        batches.append(len(e.scheduler.running))
        if e.scheduler.stats.waiting_for_memory:
            utils.append(e.scheduler.manager.usage().utilisation)
        return outs

    e.step = observed_step
    t0 = time.perf_counter()
    try:
        outs = llm.generate(prompts, params)
    except ValueError as err:   # e.g. static's share for one group is smaller than one request
        return Result(allocator, 0, len(prompts), 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0, str(err))
    dt = time.perf_counter() - t0
    s = e.stats()
    errors = sum(o.outputs[0].finish_reason == "error" for o in outs)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    n_images = sum(len(p["multi_modal_data"]["image"]) for p in prompts if isinstance(p, dict))
    hits = s.hit_tokens - before.hit_tokens
    prompt_tokens = s.prompt_tokens - before.prompt_tokens
    return Result(allocator, len(outs), errors, dt, len(outs) / dt, tokens / dt,
                  s.num_preemptions - before.num_preemptions, s.encoder_runs - before.encoder_runs, n_images,
                  hits / prompt_tokens if prompt_tokens else 0.0, s.num_steps - before.num_steps, "",
                  sum(batches) / len(batches) if batches else 0.0, sum(utils) / len(utils) if utils else 0.0)


def table(model: str, kv_bytes: int, results: list[Result]) -> str:
    base = next((r for r in results if r.allocator == "jenga" and not r.refused), results[0])
    lines = [f"model {model}, KV budget {kv_bytes / 2**20:.1f} MiB",
             "| allocator | req/s | output tok/s | vs jenga | mean batch | mem util at saturation | preemptions "
             "| encoder runs / images | prefix hits | steps | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.refused:
            lines.append(f"| {r.allocator} | refused: {r.refused} | | | | | | | | | {r.errors} |")
            continue
        ratio = r.req_per_s / max(base.req_per_s, 1e-9)
        util = f"{100 * r.mem_util:.1f}%" if r.mem_util else "never bound"
        lines.append(f"| {r.allocator} | {r.req_per_s:.2f} | {r.output_tok_per_s:.1f} | {ratio:.2f}x | "
                     f"{r.mean_batch:.1f} | {util} | {r.preemptions} | {r.encoder_runs} / {r.images} | {100 * r.hit_rate:.1f}% | {r.steps} | "
                     f"{r.errors} |")
    return "\n".join(lines)


def add_args(p) -> None:
    p.add_argument("--model", required=True, help="HF folder, builtin:NAME or vlm:NAME")
    p.add_argument("--allocator", default=ALLOCATORS, help="comma-separated, default all")
    p.add_argument("--kv-bytes", type=int, required=True, help="KV pool bytes, the same for every allocator")
    for f, default in asdict(Workload()).items():
        if f != "image_size":
            p.add_argument("--" + f.replace("_", "-"), type=int, default=default)
    p.add_argument("--image-size", default="96x160", help="HxW; heights vary down to H/2")
    p.add_argument("--max-num-batched-tokens", type=int, default=256)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--page-tokens", type=int, default=16)
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeat", type=int, default=1,
                   help="time each allocator this many times, interleaved, and keep the median run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-hf", action="store_true",
                   help="skip transformers' own continuous batching (generate_batch) on the same prompts")


def run_hf(model: Path, w: Workload) -> tuple[float, int]:
    """transformers' continuous batching (`generate_batch`, eager attention:
    its Gemma-2 has no SDPA path) on the same prompts; (seconds, tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")
    prompts = make_prompts(w, hf.config.vocab_size, None)
    cfg = GenerationConfig(max_new_tokens=w.output_len, min_new_tokens=w.output_len, do_sample=False,
                           eos_token_id=None, pad_token_id=hf.config.pad_token_id or 0)
    t0 = time.perf_counter()
    out = hf.generate_batch(inputs=prompts, generation_config=cfg, progress_bar=False)
    dt = time.perf_counter() - t0
    return dt, sum(len(o.generated_tokens) for o in out.values())


def main(args) -> int:
    from ..commands.common import split_allocators
    h, wd = (int(x) for x in args.image_size.lower().split("x"))
    w = Workload(args.num_requests, args.prompt_len, args.output_len, args.images, args.distinct_images, (h, wd),
                 args.seed)
    model = resolve(args.model)
    engine = dict(max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
                  page_tokens=args.page_tokens, enable_prefix_caching=not args.no_prefix_caching,
                  cpu_threads=args.threads)
    allocators = split_allocators(args.allocator)
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    # interleaved, so load from other processes hits every allocator alike
    runs = [[run_one(model, a, args.kv_bytes, w, **engine) for a in allocators] for _ in range(args.repeat)]
    results = [sorted((r[i] for r in runs), key=lambda x: (bool(x.refused), x.duration_s))[args.repeat // 2]
               for i in range(len(allocators))]
    if args.json:
        print(json.dumps({"model": args.model, "kv_bytes": args.kv_bytes, "workload": asdict(w),
                          "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(table(args.model, args.kv_bytes, results))
    jenga = next((r for r in results if r.allocator == "jenga" and not r.refused), None)
    if not args.no_hf and jenga and not args.model.startswith("vlm:"):
        dt, tokens = run_hf(model, w)
        print(f"transformers generate_batch (same model and prompts): {tokens / dt:.1f} output tok/s; "
              f"Jenga {jenga.output_tok_per_s:.1f} = {jenga.output_tok_per_s / (tokens / dt):.2f}x")
    return 0
