"""`jenga bench serve`: replay a workload against any OpenAI-compatible server.

The workload is one of the simulator's seeded generators (`sharegpt`,
`arxiv_qa`, `mmlu_pro`, `multiturn`; see jenga.sim.workloads), `fixed`
(every request `input_len` prompt and `output_len` output tokens), or a
JSONL trace (docs/trace-format.md).  Prompts are sent as token ids, so
their lengths are exact and shared documents or system prompts share
tokens and can hit the server's prefix cache; ids lie in
[TOKEN_LOW, vocab_size), so `vocab_size` must not exceed the model's.

Requests go out as streaming `/v1/completions` calls at their arrival
times (a Poisson `rate`, or the trace's; all at once when infinite), at
most `concurrency` in flight.  Each records its time to first token
(TTFT), mean time per output token after the first (TPOT) and end-to-end
latency; the report gives mean/p50/p90/p99 and throughput in requests and
output tokens per second.  Output tokens are counted from the server's
`usage` (include_usage), with ignore_eos so each request generates its
trace length (drop it for servers without vLLM's extension).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..sim.runner import DEFAULT_VOCAB
from ..sim.trace import Segment, TraceRequest, expand, load_trace

@dataclass(frozen=True)
class RequestResult:
    ok: bool
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    e2e_s: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class Percentiles:
    mean: float
    p50: float
    p90: float
    p99: float

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

    def table(self) -> str:
        lines = [f"requests: {self.completed} completed, {self.failed} failed in {self.duration_s:.2f} s",
                 f"throughput: {self.request_throughput:.2f} req/s, {self.output_throughput:.1f} output tok/s "
                 f"({self.total_prompt_tokens} prompt / {self.total_output_tokens} output tokens)",
                 f"{'ms':<6}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}"]
        for name, p in (("TTFT", self.ttft_ms), ("TPOT", self.tpot_ms), ("E2E", self.e2e_ms)):
            lines.append(f"{name:<6}{p.mean:>10.1f}{p.p50:>10.1f}{p.p90:>10.1f}{p.p99:>10.1f}")
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
    elif Path(workload).is_file():
        reqs = load_trace(workload, vocab_size)[:num_requests]
        if not reqs:
            raise ValueError(f"{workload}: the trace holds no requests")
    else:
        reqs = sim_workload(workload, num_requests, rate=rate, seed=seed, vocab_size=vocab_size, **gen_args)
    if any(r.images for r in reqs):
        raise ValueError(f"workload {workload!r} has images; bench serve sends text-only completions")
    return reqs


def _fixed(arrival: float, name: str, input_len: int, output_len: int, vocab_size: int) -> TraceRequest:
    seg = (Segment(name, input_len),)
    return TraceRequest(arrival, expand(seg, vocab_size), output_len, segments=seg)


async def _one(client, model: str, req: TraceRequest, ignore_eos: bool) -> RequestResult:
    body = {"model": model, "prompt": list(req.prompt), "max_tokens": req.output_len, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    start = time.perf_counter()
    first = last = None
    chunks, usage = 0, None
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
                    last = time.perf_counter()
                    first = first or last
                    chunks += 1
    except Exception as e:   # a benchmark records failures instead of stopping
        return RequestResult(False, error=f"{type(e).__name__}: {e}")
    end = time.perf_counter()
    n_out = usage["completion_tokens"] if usage else chunks
    n_in = usage["prompt_tokens"] if usage else len(req.prompt)
    ttft = (first or end) - start
    tpot = ((last or end) - (first or end)) / (n_out - 1) if n_out > 1 else 0.0
    return RequestResult(True, n_in, n_out, ttft, tpot, end - start)


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
    return BenchReport(
        num_requests=len(results), completed=len(ok), failed=len(results) - len(ok), duration_s=duration_s,
        request_throughput=len(ok) / duration_s if duration_s > 0 else 0.0,
        output_throughput=out_tokens / duration_s if duration_s > 0 else 0.0,
        total_prompt_tokens=sum(r.prompt_tokens for r in ok), total_output_tokens=out_tokens,
        ttft_ms=Percentiles.of([1000 * r.ttft_s for r in ok]),
        tpot_ms=Percentiles.of([1000 * r.tpot_s for r in ok if r.output_tokens > 1]),
        e2e_ms=Percentiles.of([1000 * r.e2e_s for r in ok]),
        errors=tuple(dict.fromkeys(r.error for r in results if not r.ok)))


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
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--workload", default="sharegpt",
                   help="sharegpt | arxiv_qa | mmlu_pro | multiturn | fixed | PATH to a JSONL trace")
    p.add_argument("--num-requests", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=None, help="most requests in flight (default: no limit)")
    p.add_argument("--rate", type=float, default=math.inf, help="Poisson arrivals per second (default: all at once)")
    p.add_argument("--model", default=None, help="model name (default: the server's first)")
    p.add_argument("--api-key", default=None, help="bearer key (default: $JENGA_API_KEY)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB,
                   help="prompt token ids are drawn below this (at most the model's vocabulary)")
    p.add_argument("--input-len", type=int, default=128, help="fixed: prompt tokens")
    p.add_argument("--output-len", type=int, default=64, help="fixed: output tokens")
    p.add_argument("--max-prompt", type=int, default=None, help="sharegpt: clip prompt tokens")
    p.add_argument("--max-output", type=int, default=None, help="sharegpt: clip output tokens")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at eos")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--no-progress", action="store_true")


def bench_serve_main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed flags and print the report.  Returns
    0, 1 when no request completed, 2 on a bad flag or unreachable server."""
    import os

    import httpx

    extra = {k: v for k, v in (("max_prompt", args.max_prompt), ("max_output", args.max_output)) if v is not None}
    if args.workload == "fixed":
        extra = {"input_len": args.input_len, "output_len": args.output_len}
    try:
        report = bench_serve(args.base_url, args.workload, args.num_requests, args.concurrency, args.rate,
                             args.model, args.api_key or os.environ.get("JENGA_API_KEY"), args.seed,
                             args.vocab_size, not args.no_ignore_eos, not args.no_progress, **extra)
    except (ValueError, TypeError, httpx.HTTPError) as e:
        print(f"jenga bench serve: error: {e}")
        return 2
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0 if report.completed else 1


main = bench_serve_main
