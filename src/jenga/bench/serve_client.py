"""`jenga bench serve`: replay a workload against any OpenAI-compatible server.

It takes vLLM's `vllm bench serve` flags, so a user can point the same
command at vLLM and at Jenga.  Datasets (`--dataset-name`):
- `random`: prompts of `--random-input-len` tokens (each drawn in
  [len * (1 - r), len * (1 + r)] for `--random-range-ratio` r) after a
  shared `--random-prefix-len` prefix, `--random-output-len` outputs;
- `prefix-repetition`: `--prefix-repetition-num-prefixes` shared prefixes
  of `--prefix-repetition-prefix-len` tokens, each request one of them plus
  a unique `--prefix-repetition-suffix-len` suffix, with
  `--prefix-repetition-output-len` outputs (what a prefix cache is for);
- `sharegpt`: lengths drawn from a ShareGPT-like distribution by the
  simulator's seeded generator (no dataset file is downloaded or read;
  `--sharegpt-output-len` fixes the outputs);
- Jenga's own `--workload` names (`arxiv_qa`, `mmlu_pro`, `multiturn`,
  `fixed`) or a JSONL trace path (docs/trace-format.md).
Prompts are sent as token ids, so their lengths are exact and shared
prefixes share tokens; ids lie in [TOKEN_LOW, vocab_size), so
`--vocab-size` must not exceed the model's.

Requests go out as streaming `/v1/completions` calls at their arrival
times (`--request-rate`: Poisson, or `inf` for all at once; a trace keeps
its own), at most `--max-concurrency` in flight.  Each records its time to
first token (TTFT), mean time per output token after the first (TPOT), the
gaps between streamed tokens (ITL) and end-to-end latency (E2EL); the
report prints mean, median and p99 of each in vLLM's layout (p90 too in
the JSON of `--save-result`).  Output tokens are counted from the server's
`usage` (include_usage), with ignore_eos so each request generates its
length (drop it with --no-ignore-eos for servers without vLLM's extension).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..sim.runner import DEFAULT_VOCAB
from ..sim.trace import Segment, TraceRequest, expand, load_trace

@dataclass(frozen=True)
class RequestResult:
    """One request: itl_s holds the gaps between its streamed token chunks."""

    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    e2e_s: float = 0.0
    error: str = ""
    itl_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class Percentiles:
    mean: float
    p50: float
    p90: float
    p99: float

    @property
    def median(self) -> float:
        return self.p50

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        """Nearest-rank percentiles (values in milliseconds); zeros when empty."""
        if not values:
            return cls(0.0, 0.0, 0.0, 0.0)
        s = sorted(values)

        def rank(p: float) -> float:
            return s[max(0, math.ceil(p / 100 * len(s)) - 1)]
        return cls(sum(s) / len(s), rank(50), rank(90), rank(99))


@dataclass(frozen=True)
class BenchReport:
    num_requests: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    total_prompt_tokens: int
    total_output_tokens: int
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    e2e_ms: Percentiles
    errors: tuple[str, ...] = ()
    itl_ms: Percentiles = Percentiles(0.0, 0.0, 0.0, 0.0)
    total_throughput: float = 0.0

    def table(self) -> str:
        """The report as `vllm bench serve` prints it."""
        rows = [("Successful requests:", f"{self.completed}"), ("Failed requests:", f"{self.failed}"),
                ("Benchmark duration (s):", f"{self.duration_s:.2f}"),
                ("Total input tokens:", f"{self.total_prompt_tokens}"),
                ("Total generated tokens:", f"{self.total_output_tokens}"),
                ("Request throughput (req/s):", f"{self.request_throughput:.2f}"),
                ("Output token throughput (tok/s):", f"{self.output_throughput:.2f}"),
                ("Total Token throughput (tok/s):", f"{self.total_throughput:.2f}")]
        lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]
        lines += [f"{k:<40}{v:<10}" for k, v in rows]
        for title, name, p in (("Time to First Token", "TTFT", self.ttft_ms),
                               ("Time per Output Token (excl. 1st token)", "TPOT", self.tpot_ms),
                               ("Inter-token Latency", "ITL", self.itl_ms),
                               ("End-to-end Latency", "E2EL", self.e2e_ms)):
            lines.append("{s:{c}^{n}}".format(s=title, n=50, c="-"))
            lines += [f"{f'Mean {name} (ms):':<40}{p.mean:<10.2f}", f"{f'Median {name} (ms):':<40}{p.median:<10.2f}",
                      f"{f'P99 {name} (ms):':<40}{p.p99:<10.2f}"]
        lines.append("=" * 50)
        lines += [f"error: {e}" for e in self.errors[:5]]
        return "\n".join(lines)


def make_workload(workload: str, num_requests: int, seed: int = 0, rate: float = math.inf,
                  vocab_size: int = DEFAULT_VOCAB, input_len: int = 128, output_len: int = 64,
                  **gen_args) -> list[TraceRequest]:
    """The first `num_requests` requests of `workload` (see module doc);
    `gen_args` go to the simulator's generator (e.g. max_prompt for
    sharegpt).  Raises ValueError for an unknown workload, a bad trace, or
    a workload with images (the client sends text-only requests)."""
    from ..sim.workloads import arrivals, make_workload as sim_workload

    if num_requests <= 0:
        raise ValueError(f"num_requests must be positive, got {num_requests}")
    if workload == "fixed":
        times = arrivals(num_requests, rate, [seed, 9])
        reqs = [_fixed(times[i], f"fixed-{seed}-{i}", input_len, output_len, vocab_size)
                for i in range(num_requests)]
    elif workload in DATASETS:
        lengths = {"output_len": output_len} if workload == "prefix-repetition" else \
            {"input_len": input_len, "output_len": output_len}
        reqs = DATASETS[workload](num_requests, arrivals(num_requests, rate, [seed, 9]), seed, vocab_size,
                                  **lengths, **gen_args)
    elif Path(workload).is_file():
        reqs = load_trace(workload, vocab_size)[:num_requests]
        if not reqs:
            raise ValueError(f"{workload}: the trace holds no requests")
    else:
        fixed_out = gen_args.pop("sharegpt_output_len", None)
        reqs = sim_workload(workload, num_requests, rate=rate, seed=seed, vocab_size=vocab_size, **gen_args)
        if fixed_out is not None:
            reqs = [replace(r, output_len=fixed_out) for r in reqs]
    if any(r.images for r in reqs):
        raise ValueError(f"workload {workload!r} has images; bench serve sends text-only completions")
    return reqs


def _fixed(arrival: float, name: str, input_len: int, output_len: int, vocab_size: int) -> TraceRequest:
    seg = (Segment(name, input_len),)
    return TraceRequest(arrival, expand(seg, vocab_size), output_len, segments=seg)


def _request(arrival: float, segments: tuple[Segment, ...], output_len: int, vocab_size: int) -> TraceRequest:
    return TraceRequest(arrival, expand(segments, vocab_size), output_len, segments=segments)


def random_dataset(n: int, times: list[float], seed: int, vocab_size: int, input_len: int = 1024,
                   output_len: int = 128, range_ratio: float = 0.0, prefix_len: int = 0) -> list[TraceRequest]:
    """vLLM's `random` dataset: a shared prefix, then input lengths drawn
    uniformly within range_ratio of input_len (outputs likewise)."""
    import random
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"random_range_ratio must be in [0, 1), got {range_ratio}")
    if input_len <= 0 or output_len <= 0 or prefix_len < 0:
        raise ValueError("random_input_len and random_output_len must be > 0, random_prefix_len >= 0")
    rng = random.Random(seed)

    def draw(x: int) -> int:
        return max(1, rng.randint(int(x * (1 - range_ratio)), int(x * (1 + range_ratio))))
    prefix = (Segment(f"random-prefix-{seed}", prefix_len),) if prefix_len else ()
    return [_request(times[i], prefix + (Segment(f"random-{seed}-{i}", draw(input_len)),), draw(output_len),
                     vocab_size) for i in range(n)]


def prefix_repetition_dataset(n: int, times: list[float], seed: int, vocab_size: int, prefix_len: int = 256,
                              suffix_len: int = 256, num_prefixes: int = 10,
                              output_len: int = 128) -> list[TraceRequest]:
    """vLLM's `prefix-repetition` dataset: request i is prefix i % num_prefixes
    plus a suffix of its own."""
    if min(prefix_len, suffix_len, num_prefixes, output_len) <= 0:
        raise ValueError("prefix_repetition_prefix_len, _suffix_len, _num_prefixes and _output_len must be > 0")
    return [_request(times[i], (Segment(f"prefix-{seed}-{i % num_prefixes}", prefix_len),
                                Segment(f"suffix-{seed}-{i}", suffix_len)), output_len, vocab_size)
            for i in range(n)]


DATASETS = {"random": random_dataset, "prefix-repetition": prefix_repetition_dataset}


async def _one(client, model: str, req: TraceRequest, ignore_eos: bool) -> RequestResult:
    body = {"model": model, "prompt": list(req.prompt), "max_tokens": req.output_len, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    start = time.perf_counter()
    first = last = None
    chunks, usage, gaps = 0, None, []
    try:
        async with client.stream("POST", "completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:200]
                return RequestResult(False, error=f"HTTP {resp.status_code}: {text}")
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return RequestResult(False, error=str(event["error"].get("message")))
                if event.get("usage"):
                    usage = event["usage"]
                if event.get("choices") and event["choices"][0].get("text"):
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now
                    first = first or last
                    chunks += 1
    except Exception as e:   # a benchmark records failures instead of stopping
        return RequestResult(False, error=f"{type(e).__name__}: {e}")
    end = time.perf_counter()
    n_out = usage["completion_tokens"] if usage else chunks
    n_in = usage["prompt_tokens"] if usage else len(req.prompt)
    ttft = (first or end) - start
    tpot = ((last or end) - (first or end)) / (n_out - 1) if n_out > 1 else 0.0
    return RequestResult(True, n_in, n_out, ttft, tpot, end - start, itl_s=tuple(gaps))


async def _run(base_url: str, requests: list[TraceRequest], concurrency: int | None, model: str | None,
               api_key: str | None, ignore_eos: bool, progress: bool) -> BenchReport:
    import httpx
    from tqdm import tqdm

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limit = concurrency or len(requests)
    async with httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, timeout=600.0,
                                 limits=httpx.Limits(max_connections=limit)) as client:
        if model is None:
            resp = await client.get("models")
            resp.raise_for_status()
            model = resp.json()["data"][0]["id"]
        sem = asyncio.Semaphore(limit)
        bar = tqdm(total=len(requests), disable=not progress, desc="bench serve", unit="req")
        start = time.perf_counter()

        async def run_one(req: TraceRequest) -> RequestResult:
            await asyncio.sleep(max(0.0, start + req.arrival_time - time.perf_counter()))
            async with sem:
                result = await _one(client, model, req, ignore_eos)
            bar.update(1)
            return result

        results = await asyncio.gather(*(run_one(r) for r in requests))
        duration = time.perf_counter() - start
        bar.close()
    return summarize(results, duration)


def summarize(results: list[RequestResult], duration_s: float) -> BenchReport:
    """Aggregate per-request results (latencies in ms)."""
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    return BenchReport(
        num_requests=len(results), completed=len(ok), failed=len(results) - len(ok), duration_s=duration_s,
        request_throughput=len(ok) / duration_s if duration_s > 0 else 0.0,
        output_throughput=out_tokens / duration_s if duration_s > 0 else 0.0,
        total_prompt_tokens=sum(r.prompt_tokens for r in ok), total_output_tokens=out_tokens,
        ttft_ms=Percentiles.of([1000 * r.ttft_s for r in ok]),
        tpot_ms=Percentiles.of([1000 * r.tpot_s for r in ok if r.output_tokens > 1]),
        e2e_ms=Percentiles.of([1000 * r.e2e_s for r in ok]),
        errors=tuple(dict.fromkeys(r.error for r in results if not r.ok)),
        itl_ms=Percentiles.of([1000 * g for r in ok for g in r.itl_s]),
        total_throughput=(in_tokens + out_tokens) / duration_s if duration_s > 0 else 0.0)


def bench_serve(base_url: str, workload: str | list[TraceRequest] = "sharegpt", num_requests: int = 100,
                concurrency: int | None = None, rate: float = math.inf, model: str | None = None,
                api_key: str | None = None, seed: int = 0, vocab_size: int = DEFAULT_VOCAB,
                ignore_eos: bool = True, progress: bool = True, **workload_args) -> BenchReport:
    """Replay `workload` against the server at `base_url` (ending in /v1)
    and return the report.  `concurrency` bounds requests in flight; `rate`
    spaces generated arrivals (Poisson; traces keep their own times).
    `model` defaults to the server's first.  Raises ValueError on a bad
    argument and httpx.HTTPError when the model list cannot be read."""
    if concurrency is not None and concurrency <= 0:
        raise ValueError(f"concurrency must be positive, got {concurrency}")
    requests = workload if isinstance(workload, list) else \
        make_workload(workload, num_requests, seed, rate, vocab_size, **workload_args)
    return asyncio.run(_run(base_url, requests, concurrency, model, api_key, ignore_eos, progress))


def add_args(p: argparse.ArgumentParser) -> None:
    """vLLM's `bench serve` flags; Jenga's earlier names stay as aliases."""
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1",
                   help="the server's OpenAI API root (ending in /v1)")
    p.add_argument("--dataset-name", "--workload", dest="workload", default="sharegpt",
                   help="random | prefix-repetition | sharegpt (synthetic lengths) | arxiv_qa | mmlu_pro | "
                        "multiturn | fixed | PATH to a JSONL trace")
    p.add_argument("--num-prompts", "--num-requests", dest="num_requests", type=int, default=100,
                   help="requests to send")
    p.add_argument("--max-concurrency", "--concurrency", dest="concurrency", type=int, default=None,
                   help="most requests in flight (default: no limit)")
    p.add_argument("--request-rate", "--rate", dest="rate", type=float, default=math.inf,
                   help="Poisson arrivals per second; inf sends all at once (default)")
    p.add_argument("--model", default=None, help="model name (default: the server's first)")
    p.add_argument("--api-key", default=None, help="bearer key (default: $JENGA_API_KEY, then $OPENAI_API_KEY)")
    p.add_argument("--seed", type=int, default=0, help="seeds the dataset and the arrivals")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB,
                   help="prompt token ids are drawn below this (at most the model's vocabulary)")
    p.add_argument("--random-input-len", type=int, default=1024, help="random: prompt tokens")
    p.add_argument("--random-output-len", type=int, default=128, help="random: output tokens")
    p.add_argument("--random-range-ratio", type=float, default=0.0,
                   help="random: lengths drawn uniformly within this fraction of the above")
    p.add_argument("--random-prefix-len", type=int, default=0, help="random: tokens of a prefix every prompt shares")
    p.add_argument("--prefix-repetition-prefix-len", type=int, default=256, help="prefix-repetition: prefix tokens")
    p.add_argument("--prefix-repetition-suffix-len", type=int, default=256, help="prefix-repetition: suffix tokens")
    p.add_argument("--prefix-repetition-num-prefixes", type=int, default=10,
                   help="prefix-repetition: distinct prefixes")
    p.add_argument("--prefix-repetition-output-len", type=int, default=128, help="prefix-repetition: output tokens")
    p.add_argument("--sharegpt-output-len", type=int, default=None, help="sharegpt: every output this long")
    p.add_argument("--input-len", type=int, default=128, help="fixed: prompt tokens")
    p.add_argument("--output-len", type=int, default=64, help="fixed: output tokens")
    p.add_argument("--max-prompt", type=int, default=None, help="sharegpt: clip prompt tokens")
    p.add_argument("--max-output", type=int, default=None, help="sharegpt: clip output tokens")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at eos")
    p.add_argument("--save-result", action="store_true", help="write the report as JSON (see --result-dir)")
    p.add_argument("--result-dir", default=".", help="folder of the --save-result file")
    p.add_argument("--result-filename", default=None,
                   help="name of the --save-result file (default: jenga-bench-<dataset>-<rate>-<time>.json)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _dataset_args(args: argparse.Namespace) -> dict:
    """The generator keywords the chosen dataset takes from the flags."""
    if args.workload == "fixed":
        return {"input_len": args.input_len, "output_len": args.output_len}
    if args.workload == "random":
        return {"input_len": args.random_input_len, "output_len": args.random_output_len,
                "range_ratio": args.random_range_ratio, "prefix_len": args.random_prefix_len}
    if args.workload == "prefix-repetition":
        return {"prefix_len": args.prefix_repetition_prefix_len, "suffix_len": args.prefix_repetition_suffix_len,
                "num_prefixes": args.prefix_repetition_num_prefixes, "output_len": args.prefix_repetition_output_len}
    extra = {k: v for k, v in (("max_prompt", args.max_prompt), ("max_output", args.max_output)) if v is not None}
    if args.workload == "sharegpt" and args.sharegpt_output_len is not None:
        extra["sharegpt_output_len"] = args.sharegpt_output_len
    return extra


def bench_serve_main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed flags and print the report.  Returns
    0, 1 when no request completed, 2 on a bad flag or unreachable server."""
    import os

    import httpx

    key = args.api_key or os.environ.get("JENGA_API_KEY") or os.environ.get("OPENAI_API_KEY")
    try:
        report = bench_serve(args.base_url, args.workload, args.num_requests, args.concurrency, args.rate,
                             args.model, key, args.seed, args.vocab_size, not args.no_ignore_eos,
                             not args.no_progress, **_dataset_args(args))
    except (ValueError, TypeError, httpx.HTTPError) as e:
        print(f"jenga bench serve: error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    body = json.dumps(asdict(report), indent=2)
    if args.json:
        Path(args.json).write_text(body)
    if args.save_result:
        name = args.result_filename or \
            f"jenga-bench-{Path(args.workload).name}-{args.rate}qps-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out = Path(args.result_dir) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body)
        print(f"saved {out}")
    return 0 if report.completed else 1


main = bench_serve_main
