"""Faults injected into steps through the engine's executor: a step that
raises fails only its own requests (clean errors, pages freed) and the
server goes on; an executor that always raises makes the engine give up,
every request gets a clean error and `run` returns 1 (the exit status)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx

from live import LiveServer

POISON = (11, 11, 11)   # a prompt that starts so makes its first step raise
GOOD = {"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 6, "ignore_eos": True, "temperature": 0}


class FaultyExecutor:
    """The engine's executor, except that `execute` raises on the plans
    `fail(plan)` picks (an injected fault, as a runner bug would)."""

    def __init__(self, inner, fail) -> None:
        self.inner, self.fail, self.failures = inner, fail, 0

    def execute(self, plan):
        if self.fail(plan):
            self.failures += 1
            raise RuntimeError("injected fault")
        return self.inner.execute(plan)

    def register_inputs(self, req_id, inputs):
        return self.inner.register_inputs(req_id, inputs)

    def close(self):
        return self.inner.close()


def poisoned(plan) -> bool:
    return any(s.start == 0 and s.token_ids[:3] == POISON for s in plan.seqs)


def no_pages_held(server) -> None:
    def probe(engine):
        manager = engine.scheduler.manager
        manager.check_invariants()
        return dict(manager.reqs), manager.usage().used_bytes, engine.has_unfinished_requests()
    assert server.on_engine(probe) == ({}, 0, False)


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_a_failed_step_fails_its_requests_and_the_server_goes_on(make_engine):
    engine = make_engine(max_num_seqs=1)
    engine.executor = FaultyExecutor(engine.executor, poisoned)
    server = LiveServer(engine)
    try:
        bad = {**GOOD, "prompt": list(POISON) + [5]}

        async def main():
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
                release = threading.Event()
                holder = threading.Thread(target=server.on_engine, args=(lambda e: release.wait(30),))
                holder.start()   # both requests queue before any step: the poisoned one first
                first = asyncio.create_task(c.post("/completions", json=bad))
                while server.async_engine._commands.qsize() < 1:
                    await asyncio.sleep(0.01)
                second = asyncio.create_task(c.post("/completions", json=GOOD))
                while server.async_engine._commands.qsize() < 2:
                    await asyncio.sleep(0.01)
                release.set()
                holder.join()
                r1, r2 = await first, await second
                async with c.stream("POST", "/completions", json={**bad, "stream": True}) as r:
                    events = [line async for line in r.aiter_lines() if line]
                return r1, r2, events

        r1, r2, events = asyncio.run(main())
        assert r1.status_code == 500 and r1.json()["error"]["type"] == "server_error"
        assert "engine failed while running this request" in r1.json()["error"]["message"]
        assert "Traceback" not in r1.text
        assert r2.status_code == 200 and r2.json()["usage"]["completion_tokens"] == 6   # it was waiting: unharmed
        assert events[-1] == "data: [DONE]" and "engine failed" in json.loads(events[-2][6:])["error"]["message"]
        assert httpx.get(server.root + "/health").status_code == 200
        assert httpx.post(server.base_url + "/completions", json=GOOD).status_code == 200
        server.wait_idle()
        no_pages_held(server)
        assert engine.executor.failures == 2
        assert 'jenga_requests_total{finish_reason="error"} 2.0' in httpx.get(server.root + "/metrics").text
    finally:
        server.stop()


def test_an_engine_that_cannot_go_on_fails_everything_and_exits_non_zero(make_engine):
    from jenga.server.app import ServerConfig, build_app
    from jenga.server.run import run

    engine = make_engine()
    engine.executor = FaultyExecutor(engine.executor, lambda plan: bool(plan.seqs))
    app = build_app(engine, ServerConfig(served_model_name="tiny", drain_timeout_s=0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status: list[int] = []
    runner = threading.Thread(target=lambda: status.append(run(app, host="127.0.0.1", port=port,
                                                               log_level="critical")))
    runner.start()
    root = f"http://127.0.0.1:{port}"
    _wait(lambda: _up(root))
    codes = []
    for _ in range(3):   # MAX_CONSECUTIVE_FAILURES failed steps in a row: the engine gives up
        r = httpx.post(root + "/v1/completions", json=GOOD, timeout=60)
        codes.append((r.status_code, r.json()["error"]["type"]))
    runner.join(60)
    assert not runner.is_alive() and status == [1]
    assert codes == [(500, "server_error"), (500, "server_error"), (503, "server_error")]
    assert not engine.has_unfinished_requests()
    engine.scheduler.manager.check_invariants()
    assert engine.scheduler.manager.reqs == {}


def _up(root: str) -> bool:
    try:
        return httpx.get(root + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
