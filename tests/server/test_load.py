"""Many concurrent clients with mixed lengths and random disconnects: every
request ends with a complete answer or a clean error, and afterwards no
page is held by any request (the small version runs by default; the full
one, 300 requests from 32 clients, with JENGA_SLOW=1)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass

import httpx
import pytest

from live import LiveServer

WORDS = "the quick brown fox jumps over lazy dog paging memory pool hello world".split()


@dataclass
class Outcome:
    kind: str            # "complete" | "disconnected" | "rejected"
    detail: str = ""


def _request(rng: random.Random) -> tuple[str, dict, bool]:
    n_words = rng.choice([1, 3, 10, 20, 40, 60, 200])   # 200 words overflows the 256-token context: a clean 400
    prompt = " ".join(rng.choice(WORDS) for _ in range(n_words))
    body = {"model": "tiny", "max_tokens": rng.randint(1, 48), "temperature": rng.choice([0.0, 0.8]),
            "seed": rng.randint(0, 100), "ignore_eos": rng.random() < 0.5}
    if rng.random() < 0.5:
        return "/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}, True
    return "/completions", {**body, "prompt": prompt}, False


async def _client(client: httpx.AsyncClient, rng: random.Random) -> Outcome:
    path, body, chat = _request(rng)
    stream = rng.random() < 0.6
    disconnect = rng.random() < 0.25
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", path, json=body) as resp:
            if resp.status_code != 200:
                return _rejected(resp.status_code, json.loads(await resp.aread()))
            events, cut = [], rng.randint(1, 4)
            async for line in resp.aiter_lines():
                if line:
                    events.append(line)
                if disconnect and len(events) >= cut:
                    return Outcome("disconnected")
        return _check_stream(events, body, chat)
    try:
        timeout = rng.uniform(0.0, 0.05) if disconnect else None
        resp = await asyncio.wait_for(client.post(path, json=body), timeout)
    except asyncio.TimeoutError:
        return Outcome("disconnected")
    if resp.status_code != 200:
        return _rejected(resp.status_code, resp.json())
    data = resp.json()
    assert data["choices"][0]["finish_reason"] in ("stop", "length")
    assert 1 <= data["usage"]["completion_tokens"] <= body["max_tokens"]
    if body["ignore_eos"]:
        assert data["usage"]["completion_tokens"] == body["max_tokens"]
    return Outcome("complete")


def _rejected(status: int, body: dict) -> Outcome:
    assert status == 400, body
    assert "maximum context length" in body["error"]["message"]
    return Outcome("rejected", body["error"]["param"])


def _check_stream(events: list[str], body: dict, chat: bool) -> Outcome:
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "error" not in chunks[-1], chunks[-1]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])
    usage = chunks[-1]["usage"]
    assert 1 <= usage["completion_tokens"] <= body["max_tokens"]
    if body["ignore_eos"]:
        assert usage["completion_tokens"] == body["max_tokens"]
    return Outcome("complete")


def _run_load(make_engine, num_requests: int, clients: int, seed: int) -> list[Outcome]:
    # a pool of ~2k tokens for up to 32 running requests: preemption happens
    server = LiveServer(make_engine(kv_cache_memory=2**20, max_num_seqs=clients))
    try:
        async def main() -> list[Outcome]:
            rng = random.Random(seed)
            sem = asyncio.Semaphore(clients)
            limits = httpx.Limits(max_connections=clients)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=120, limits=limits) as client:
                async def one(r: random.Random) -> Outcome:
                    async with sem:
                        return await _client(client, r)
                return await asyncio.gather(*(one(random.Random(rng.random())) for _ in range(num_requests)))

        outcomes = asyncio.run(main())
        server.wait_idle()

        def check(engine) -> tuple[int, int]:
            manager = engine.scheduler.manager
            manager.check_invariants()
            assert manager.reqs == {}, "a finished request still holds memory state"
            assert manager.usage().used_bytes == 0
            manager.reset_prefix_cache()
            manager.check_invariants()
            return manager.usage().free_large_pages, manager.plan.num_large_pages
        free, total = server.on_engine(check)
        assert free == total
        assert server.async_engine.num_in_flight == 0
    finally:
        server.stop()
    return outcomes


def _summary(outcomes: list[Outcome]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for o in outcomes:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    return kinds


def test_load_small(make_engine):
    outcomes = _run_load(make_engine, num_requests=96, clients=32, seed=1)
    kinds = _summary(outcomes)
    assert sum(kinds.values()) == 96
    assert kinds.get("complete", 0) >= 40 and kinds.get("disconnected", 0) >= 10 and kinds.get("rejected", 0) >= 1


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("JENGA_SLOW"), reason="slow: set JENGA_SLOW=1")
def test_load_full(make_engine):
    outcomes = _run_load(make_engine, num_requests=300, clients=32, seed=2)
    kinds = _summary(outcomes)
    assert sum(kinds.values()) == 300
    assert kinds.get("complete", 0) >= 150 and kinds.get("disconnected", 0) >= 30


def test_load_with_a_fault_a_burst_and_a_shutdown(make_engine):
    """16 concurrent streaming clients on a server that runs 4 at a time
    (a burst beyond max_num_seqs), half of them walking away, two whose
    step is made to fail; then a shutdown (what SIGTERM does) with long
    requests in flight.  Every client ends with a complete answer, its own
    disconnect, or a clean error; afterwards nothing holds a page, nothing
    runs or waits, and while it served the server stayed healthy."""
    from test_faults import POISON, FaultyExecutor, no_pages_held, poisoned

    engine = make_engine(max_num_seqs=4)
    engine.executor = FaultyExecutor(engine.executor, poisoned)
    server = LiveServer(engine, drain_timeout_s=0.3)

    async def client(c: httpx.AsyncClient, i: int) -> str:
        body = {"model": "tiny", "prompt": list(POISON) + [5] if i in (3, 9) else [5, 6, 7 + i],
                "max_tokens": 24, "ignore_eos": True, "stream": True}
        async with c.stream("POST", "/completions", json=body) as r:
            events = []
            async for line in r.aiter_lines():
                if line:
                    events.append(line)
                if i % 2 and len(events) >= 2 and i not in (3, 9):
                    return "walked away"
        assert events[-1] == "data: [DONE]", events[-3:]
        last = json.loads(events[-2][6:])
        if "error" in last:
            return "error: " + last["error"]["message"]
        assert last["choices"][0]["finish_reason"] == "length"
        return "complete"

    async def long_stream(c: httpx.AsyncClient, started: asyncio.Event) -> str:
        body = {"model": "tiny", "prompt": [5, 6], "max_tokens": 240, "ignore_eos": True, "stream": True}
        async with c.stream("POST", "/completions", json=body) as r:
            events = []
            async for line in r.aiter_lines():
                if line:
                    events.append(line)
                    started.set()
        return events[-1] + " after " + json.loads(events[-2][6:]).get("error", {}).get("message", "no error")

    async def main():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            outcomes = await asyncio.gather(*(client(c, i) for i in range(16)))
            assert (await c.get(server.root + "/health")).status_code == 200
            server.wait_idle()
            no_pages_held(server)
            starts = [asyncio.Event() for _ in range(3)]
            longs = [asyncio.ensure_future(long_stream(c, e)) for e in starts]
            for e in starts:
                await e.wait()
            await asyncio.to_thread(server.stop)
            return outcomes, await asyncio.gather(*longs)

    try:
        outcomes, at_shutdown = asyncio.run(main())
    finally:
        server.stop()
    failed = "error: the engine failed while running this request (RuntimeError)"
    assert outcomes[3] == outcomes[9] == failed
    # a failed step fails the requests it ran (at most max_num_seqs each), no others
    assert set(outcomes) <= {"complete", "walked away", failed} and outcomes.count(failed) <= 8, outcomes
    assert outcomes.count("complete") >= 1 and outcomes.count("walked away") >= 1, outcomes
    assert engine.executor.failures == 2
    assert all(s.startswith("data: [DONE] after server shut down before the request finished") for s in at_shutdown)
    assert not server.async_engine._thread.is_alive() and not server.thread.is_alive()
    assert not engine.has_unfinished_requests()
    engine.scheduler.manager.check_invariants()
    assert engine.scheduler.manager.reqs == {} and engine.scheduler.manager.usage().used_bytes == 0
