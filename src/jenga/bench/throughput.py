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

Utilisation at saturated steps is given as the allocator counts it and as
the layers truly need it (`util_true`, one yardstick for all allocators);
transformers' `generate_batch` on the same prompts and KV bytes is the
outside reference.  docs/benchmarks.md says what each number means.

Models: a local HF folder, `builtin:NAME` (bench/builtin_models.py) or
`vlm:NAME` (bench/vlm_models.py: mllama-small, llava-small).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..cliutil import SIZE_HELP, parse_bytes
from ..memory.footprint import true_need_bytes

ALLOCATORS = "jenga,max-page,static,uniform"
DEFAULT_MODEL = "builtin:gemma2-small"
# CLI defaults: prompts 3x the built-ins' 128-token window, a pool that fits ~2
# of them under max-page and ~3 under jenga: memory, not max_num_seqs, binds.
DEFAULT_KV_BYTES = 6 * 2**20
CLI_WORKLOAD = dict(num_requests=24, prompt_len=384, output_len=32)


@dataclass(frozen=True)
class Workload:
    num_requests: int = 32
    prompt_len: int = 48
    output_len: int = 32
    images: int = 1
    distinct_images: int = 0       # 0: every image distinct
    image_size: tuple[int, int] = (96, 160)
    seed: int = 0
    prompt_len_min: int = 0        # > 0: each prompt's length drawn from [prompt_len_min, prompt_len]

    def __post_init__(self) -> None:
        for name in ("num_requests", "prompt_len", "output_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.images < 0 or self.distinct_images < 0:
            raise ValueError("images and distinct_images must be >= 0")
        if not 0 <= self.prompt_len_min <= self.prompt_len:
            raise ValueError(f"prompt_len_min must be in [0, prompt_len={self.prompt_len}], got {self.prompt_len_min}")


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
    total_tok_per_s: float = 0.0   # (prompt + output tokens) / duration
    max_batch: int = 0             # most running requests in one step
    util_true: float = 0.0         # state the layers truly need / pool bytes, same steps as mem_util
    saturated_steps: int = 0       # steps that left a request waiting for memory
    batch_series: tuple[int, ...] = ()   # running requests after each step


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
        n = int(rng.integers(w.prompt_len_min, w.prompt_len + 1)) if w.prompt_len_min else w.prompt_len
        ids = [int(t) for t in rng.integers(0, vocab, n)]
        ids = [t if t != image_token else 0 for t in ids]
        if image_token is None or not w.images:
            prompts.append(ids)
            continue
        images = []
        for slot in sorted(rng.choice(n - 1, w.images, replace=False) + 1, reverse=True):
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


def run_one(model: Path, allocator: str, kv_bytes: int, w: Workload, progress: bool = False,
            **engine: object) -> Result:
    """One engine with `allocator`, the workload timed after a warm-up;
    `progress` shows a tqdm bar of finished requests."""
    from ..engine.llm import LLM
    from ..memory.planner import build_plan
    from ..sched.params import SamplingParams
    llm = LLM(str(model), allocator=allocator, kv_cache_memory=kv_bytes, **engine)
    e = llm.engine
    ref = build_plan(e.shape, e.plan.pool_bytes, allocator="jenga", page_tokens=e.config.page_tokens)
    vision = e.vision
    prompts = make_prompts(w, e.vocab_size, vision.image_token_id if vision else None)
    params = SamplingParams(max_tokens=w.output_len, temperature=0.0, ignore_eos=True)
    llm.generate(make_prompts(Workload(1, 8, 2, min(w.images, 1), seed=w.seed + 1), e.vocab_size,
                              vision.image_token_id if vision else None), params)
    before = e.stats()
    batches, utils, true_utils, probe_s = [], [], [], [0.0]

    def observe(event):   # what each step ran and, when memory bound it, how full the pool was
        t = time.perf_counter()
        batches.append(len(e.scheduler.running))
        if event.waiting_for_memory:
            utils.append(e.scheduler.manager.usage().utilisation)
            true_utils.append(true_need_bytes(ref, e.scheduler.running) / e.plan.pool_bytes)
        probe_s[0] += time.perf_counter() - t   # measuring is not serving: kept out of the time

    e.add_step_observer(observe)
    t0 = time.perf_counter()
    try:
        outs = llm.generate(prompts, params, use_tqdm=progress)
    except ValueError as err:   # e.g. static's share for one group is smaller than one request
        return Result(allocator, 0, len(prompts), 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0, str(err))
    finally:
        e.close()   # tensor-parallel workers end with the run
    dt = time.perf_counter() - t0 - probe_s[0]
    s = e.stats()
    errors = sum(o.outputs[0].finish_reason == "error" for o in outs)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    n_images = sum(len(p["multi_modal_data"]["image"]) for p in prompts if isinstance(p, dict))
    hits = s.hit_tokens - before.hit_tokens
    prompt_tokens = s.prompt_tokens - before.prompt_tokens
    total = tokens + sum(len(o.prompt_token_ids) for o in outs)
    return Result(allocator, len(outs), errors, dt, len(outs) / dt, tokens / dt,
                  s.num_preemptions - before.num_preemptions, s.encoder_runs - before.encoder_runs, n_images,
                  hits / prompt_tokens if prompt_tokens else 0.0, s.num_steps - before.num_steps, "",
                  _mean(batches), _mean(utils), total / dt, max(batches, default=0), _mean(true_utils),
                  len(utils), tuple(batches))


def _mean(xs: list) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def table(model: str, kv_bytes: int, results: list[Result]) -> str:
    base = next((r for r in results if r.allocator == "jenga" and not r.refused), results[0])
    lines = [f"model {model}, KV budget {kv_bytes / 2**20:.1f} MiB",
             "| allocator | req/s | output tok/s | total tok/s | vs jenga | mean batch (max) | mem util at saturation "
             "(allocator's count / true need) | preemptions | encoder runs / images | prefix hits | steps | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.refused:
            lines.append(f"| {r.allocator} | refused: {r.refused} | | | | | | | | | | {r.errors} |")
            continue
        ratio = r.req_per_s / max(base.req_per_s, 1e-9)
        util = f"{100 * r.mem_util:.1f}% / {100 * r.util_true:.1f}%" if r.saturated_steps else "never bound"
        lines.append(f"| {r.allocator} | {r.req_per_s:.2f} | {r.output_tok_per_s:.1f} | {r.total_tok_per_s:.1f} | "
                     f"{ratio:.2f}x | {r.mean_batch:.1f} ({r.max_batch}) | {util} | {r.preemptions} | "
                     f"{r.encoder_runs} / {r.images} | {100 * r.hit_rate:.1f}% | {r.steps} | {r.errors} |")
    return "\n".join(lines)


def bound_warning(results: list[Result], max_num_seqs: int) -> str | None:
    """A warning when some run hit max_num_seqs or never waited for memory:
    then the batch limit, not the allocator, set its batch."""
    ran = [r for r in results if not r.refused]
    parts = [f"{', '.join(names)} {what}" for names, what in (
        ([r.allocator for r in ran if r.max_batch >= max_num_seqs], f"reached max_num_seqs={max_num_seqs}"),
        ([r.allocator for r in ran if not r.saturated_steps], "never waited for memory")) if names]
    return "warning: " + "; ".join(parts) + ": memory did not bound the batch, so the allocators are not " \
        "compared" if parts else None


def plot_batches(results: list[Result], path: str, title: str) -> None:
    """A PNG of the running batch after each step, one line per allocator."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    styles = ("-", "--", ":", "-.")   # equal series (jenga and uniform often are) stay visible
    for i, r in enumerate(x for x in results if not x.refused):
        ax.plot(range(1, len(r.batch_series) + 1), r.batch_series, drawstyle="steps-post",
                linestyle=styles[i % len(styles)], linewidth=2.2 - 0.4 * (i % 3),
                label=f"{r.allocator}: mean {r.mean_batch:.2f}, {r.steps} steps")
    ax.set_xlabel("engine step")
    ax.set_ylabel("running requests")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_WORKLOAD_HELP = {"num_requests": "requests in the workload", "prompt_len": "prompt tokens per request",
                  "output_len": "tokens generated per request", "images": "images per request (VLMs)",
                  "distinct_images": "distinct images in the workload (0: every image distinct)",
                  "seed": "seed of the prompts and images",
                  "prompt_len_min": "> 0: each prompt's length is drawn from [prompt_len_min, prompt_len]"}


def add_args(p) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="HF folder, builtin:NAME or vlm:NAME (default %(default)s)")
    p.add_argument("--allocator", default=ALLOCATORS, help="comma-separated, default all")
    p.add_argument("--kv-cache-memory-bytes", "--kv-bytes", "--kv-cache-memory", dest="kv_bytes", type=parse_bytes,
                   default=DEFAULT_KV_BYTES, metavar="BYTES",
                   help=f"KV pool, the same for every allocator (default 6MiB); {SIZE_HELP}")
    for f, default in asdict(Workload()).items():
        if f != "image_size":
            flags = ["--" + f.replace("_", "-")] + (["--num-prompts"] if f == "num_requests" else [])
            p.add_argument(*flags, dest=f, type=int, default=CLI_WORKLOAD.get(f, default),
                           help=f"{_WORKLOAD_HELP.get(f, f.replace('_', ' '))} (default {CLI_WORKLOAD.get(f, default)})")
    p.add_argument("--image-size", default="96x160", help="HxW; heights vary down to H/2")
    p.add_argument("--max-num-batched-tokens", type=int, default=512, help="token budget of one step (default 512)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="most requests running at once (default 64)")
    p.add_argument("--block-size", "--page-tokens", dest="page_tokens", type=int, default=16,
                   help="tokens per small page of the attention groups (default 16)")
    p.add_argument("--no-prefix-caching", action="store_true", help="turn the prefix cache off")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="ranks per engine (worker processes on this machine; docs/parallel.md)")
    p.add_argument("--threads", "--cpu-threads", dest="threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a small shared box more threads spin against each other)")
    p.add_argument("--repeat", type=int, default=1,
                   help="time each allocator this many times, interleaved, and keep the median run")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--plot", default=None, help="write a PNG of the running batch per step, per allocator")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--vs-transformers", action="store_true",
                   help="instead of the allocators: Jenga against transformers generate (one padded batch) and "
                        "generate_batch, interleaved --repeat times (bench/vs_transformers.py)")
    p.add_argument("--no-hf", action="store_true",
                   help="skip transformers' own continuous batching (generate_batch) on the same prompts")


def hf_cache_config(hf_config, kv_bytes: int, max_batch_tokens: int, page_tokens: int = 16):
    """transformers' ContinuousBatchingConfig holding `kv_bytes` of fp32 KV:
    its num_blocks counts blocks of `page_tokens` tokens of every layer at
    full-attention size.  Without it transformers sizes the cache from the
    machine's memory, which on CPU means gigabytes to zero and mask."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    c = hf_config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    block = c.num_hidden_layers * page_tokens * 2 * (c.num_key_value_heads or c.num_attention_heads) * head_dim * 4
    return ContinuousBatchingConfig(num_blocks=max(1, kv_bytes // block), page_size=page_tokens,
                                    max_batch_tokens=max_batch_tokens)


def run_hf(model: Path, w: Workload, kv_bytes: int | None = None, max_batch_tokens: int = 512,
           threads: int | None = None) -> tuple[float, int]:
    """transformers' continuous batching (`generate_batch`, eager attention:
    its Gemma-2 has no SDPA path) on the same prompts, after a one-prompt
    warm-up; with `kv_bytes`, a paged cache of that size (hf_cache_config).
    Returns (seconds, tokens)."""
    import logging

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if threads is not None:
        torch.set_num_threads(threads)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")
    prompts = make_prompts(w, hf.config.vocab_size, None)
    cfg = GenerationConfig(max_new_tokens=w.output_len, min_new_tokens=w.output_len, do_sample=False,
                           eos_token_id=None, pad_token_id=hf.config.pad_token_id or 0)
    cb = None if kv_bytes is None else hf_cache_config(hf.config, kv_bytes, max_batch_tokens)
    log = logging.getLogger("ContinuousBatchingLogger")
    level = log.level
    log.setLevel(logging.CRITICAL)   # on CPU it logs an ERROR (no psutil) on every call
    try:
        hf.generate_batch(inputs=prompts[:1], generation_config=cfg, continuous_batching_config=cb)
        t0 = time.perf_counter()
        out = hf.generate_batch(inputs=prompts, generation_config=cfg, continuous_batching_config=cb,
                                progress_bar=False)
        dt = time.perf_counter() - t0
    finally:
        log.setLevel(level)
    return dt, sum(len(o.generated_tokens) for o in out.values())


def main(args) -> int:
    from ..commands.common import split_allocators
    h, wd = (int(x) for x in args.image_size.lower().split("x"))
    w = Workload(args.num_requests, args.prompt_len, args.output_len, args.images, args.distinct_images, (h, wd),
                 args.seed, args.prompt_len_min)
    model = resolve(args.model)
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    if args.vs_transformers:
        return _vs_transformers(args, model, w)
    engine = dict(max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
                  page_tokens=args.page_tokens, enable_prefix_caching=not args.no_prefix_caching,
                  cpu_threads=args.threads, tensor_parallel_size=args.tensor_parallel_size)
    allocators = split_allocators(args.allocator)
    # interleaved, so load from other processes hits every allocator alike
    progress = not args.no_progress and not args.json
    runs = [[run_one(model, a, args.kv_bytes, w, progress=progress, **engine) for a in allocators]
             for _ in range(args.repeat)]
    results = [sorted((r[i] for r in runs), key=lambda x: (bool(x.refused), x.duration_s))[args.repeat // 2]
               for i in range(len(allocators))]
    if args.json:
        print(json.dumps({"model": args.model, "kv_bytes": args.kv_bytes, "workload": asdict(w),
                          "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(table(args.model, args.kv_bytes, results))
        warning = bound_warning(results, args.max_num_seqs)
        if warning:
            print(warning)
    if args.plot:
        plot_batches(results, args.plot, f"{args.model}: {w.num_requests} x ({w.prompt_len} + {w.output_len}) "
                                         f"tokens, KV {args.kv_bytes / 2**20:.1f} MiB")
    jenga = next((r for r in results if r.allocator == "jenga" and not r.refused), None)
    if not args.no_hf and jenga and not args.model.startswith("vlm:"):
        dt, tokens = run_hf(model, w, args.kv_bytes, args.max_num_batched_tokens, args.threads)
        print(f"transformers generate_batch (same model, prompts and KV bytes): {tokens / dt:.1f} output tok/s; "
              f"Jenga {jenga.output_tok_per_s:.1f} = {jenga.output_tok_per_s / (tokens / dt):.2f}x")
    return 0


def _vs_transformers(args, model: Path, w: Workload) -> int:
    import torch

    from .vs_transformers import compare, report
    if args.model.startswith("vlm:"):
        raise ValueError("--vs-transformers compares text models only")
    torch.set_num_threads(args.threads)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    prompts = make_prompts(w, vocab, None)
    timings, agree = compare(model, prompts, w.output_len, args.kv_bytes, args.repeat, args.max_num_batched_tokens,
                             max_num_seqs=args.max_num_seqs, page_tokens=args.page_tokens,
                             enable_prefix_caching=not args.no_prefix_caching, cpu_threads=args.threads)
    lengths = [len(p) for p in prompts]
    print(report(args.model, len(prompts), (min(lengths), max(lengths)), w.output_len, args.threads, timings, agree))
    print(f"load average {open('/proc/loadavg').read().split()[:3]}, mean prompt {sum(lengths) / len(lengths):.0f} "
          "tokens")
    return 0
