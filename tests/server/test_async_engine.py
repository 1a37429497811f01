"""AsyncEngine without HTTP: batching across requests, draining and
aborting on shutdown, and a failing engine that must not hang clients."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jenga.sched.params import SamplingParams
from jenga.server.async_engine import AsyncEngine, EngineDead

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)


async def _drain(stream) -> list:
    try:
        return [out async for out in stream]
    finally:
        stream.close()


def test_concurrent_requests_run_in_the_same_steps(make_engine):
    """Three requests queued while the engine thread is held get their
    first tokens in one step and all their tokens in the same steps."""
    steps: dict[str, list[float]] = {}

    def on_output(stream, out, now):
        steps.setdefault(stream.request_id, []).append(now)

    async def main():
        ae = AsyncEngine(make_engine(), on_output=on_output)
        ae.start()
        release = threading.Event()
        hold = asyncio.ensure_future(ae.call(lambda e: release.wait(10)))
        adds = [asyncio.ensure_future(ae.add_request(f"r{i}", [5, 6, 7 + i], GREEDY)) for i in range(3)]
        while ae._commands.qsize() < 3:   # all three adds are queued behind the hold
            await asyncio.sleep(0.001)
        release.set()
        await hold
        streams = await asyncio.gather(*adds)
        results = await asyncio.gather(*(_drain(s) for s in streams))
        await ae.shutdown()
        return results

    results = asyncio.run(main())
    assert [len(r[-1].outputs[0].token_ids) for r in results] == [6, 6, 6]
    assert all(r[-1].finished for r in results)
    assert steps["r0"] == steps["r1"] == steps["r2"]
    assert len(steps["r0"]) == 6


def test_shutdown_drains_when_given_time(make_engine):
    async def main():
        ae = AsyncEngine(make_engine())
        ae.start()
        stream = await ae.add_request("a", [5, 6, 7], GREEDY)
        consumer = asyncio.ensure_future(_drain(stream))
        await ae.shutdown(drain_timeout_s=30)
        return await consumer, ae

    outputs, ae = asyncio.run(main())
    assert outputs[-1].finished and len(outputs[-1].outputs[0].token_ids) == 6
    assert not ae.healthy and not ae._thread.is_alive()


def test_shutdown_without_drain_aborts_and_frees(make_engine):
    engine = make_engine()

    async def main():
        ae = AsyncEngine(engine)
        ae.start()
        release = threading.Event()
        hold = asyncio.ensure_future(ae.call(lambda e: release.wait(10)))
        add = asyncio.ensure_future(ae.add_request("a", [5, 6, 7], SamplingParams(max_tokens=200, ignore_eos=True)))
        while ae._commands.qsize() < 1:   # the add is queued behind the hold
            await asyncio.sleep(0.001)
        release.set()
        await hold
        stream = await add
        consumer = asyncio.ensure_future(_drain(stream))
        while not await ae.call(lambda e: e.stats().generated_tokens):   # it is running
            await asyncio.sleep(0.001)
        await ae.shutdown(drain_timeout_s=0)
        with pytest.raises(EngineDead):
            await consumer
        return ae

    ae = asyncio.run(main())
    assert not ae._thread.is_alive()
    assert not engine.has_unfinished_requests()
    engine.scheduler.manager.check_invariants()
    assert engine.scheduler.manager.reqs == {}


class _Exploding:
    """An engine whose third step raises (a bug in a runner)."""

    def __init__(self, engine) -> None:
        self.engine, self.steps = engine, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def step(self):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("boom")
        return self.engine.step()


def test_engine_failure_ends_streams_instead_of_hanging(make_engine):
    async def main():
        ae = AsyncEngine(_Exploding(make_engine()))
        ae.start()
        stream = await ae.add_request("a", [5, 6, 7], SamplingParams(max_tokens=50, ignore_eos=True))
        with pytest.raises(EngineDead, match="RuntimeError"):
            await asyncio.wait_for(_drain(stream), 10)
        assert not ae.healthy
        with pytest.raises(EngineDead):
            await ae.add_request("b", [5], GREEDY)
        await ae.shutdown()

    asyncio.run(main())


def test_add_request_errors_come_back_to_the_caller(make_engine):
    async def main():
        ae = AsyncEngine(make_engine())
        ae.start()
        try:
            with pytest.raises(ValueError):
                await ae.add_request("a", [5] * 300, GREEDY)   # longer than the 256-token context
            assert ae.num_in_flight == 0
            stream = await ae.add_request("b", [5, 6], GREEDY)
            with pytest.raises(ValueError, match="already in use"):
                await ae.add_request("b", [5, 6], GREEDY)
            await _drain(stream)
        finally:
            await ae.shutdown()

    asyncio.run(main())
