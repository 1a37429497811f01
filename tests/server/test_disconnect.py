"""A client that goes away has its request aborted at once and its pages
released; shutdown aborts what is left and leaves no thread running."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest

LONG = {"model": "tiny", "prompt": "hello world, how are you", "max_tokens": 240, "ignore_eos": True,
        "temperature": 0}


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _no_pages_held(live) -> None:
    def probe(engine):
        manager = engine.scheduler.manager
        manager.check_invariants()
        return dict(manager.reqs), manager.usage().used_bytes, engine.has_unfinished_requests()
    reqs, used, busy = live.on_engine(probe)
    assert reqs == {} and used == 0 and not busy


class Freezer:
    """Holds the engine thread still between two steps (a command that
    waits), so what the server does meanwhile is deterministic."""

    def __init__(self, live) -> None:
        self.release = threading.Event()
        self.thread = threading.Thread(target=live.on_engine, args=(lambda e: self.release.wait(30),))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join()


def _counter(live, name: str) -> float:
    for line in httpx.get(live.root + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_stream_disconnect_aborts_the_request(live):
    live.wait_idle()
    generated = live.on_engine(lambda e: e.stats().generated_tokens)
    prompt_metric, generated_metric = _counter(live, "jenga_prompt_tokens_total"), \
        _counter(live, "jenga_generation_tokens_total")
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        with client.stream("POST", "/completions", json={**LONG, "stream": True}) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
            request_id = first["id"]
            freezer = Freezer(live).__enter__()   # no step runs until the abort is queued
    _wait(lambda: live.async_engine.num_in_flight == 0)
    freezer.__exit__()
    live.wait_idle()
    assert live.on_engine(lambda e: request_id in e.scheduler.requests) is False
    assert live.on_engine(lambda e: e.stats().generated_tokens) - generated < 240
    _no_pages_held(live)
    text = httpx.get(live.root + "/metrics").text
    assert 'jenga_requests_total{finish_reason="abort"}' in text
    # the aborted request counts its prompt and the tokens it had generated
    prompt_len = len(live.engine.tokenizer.encode(LONG["prompt"]))
    assert _counter(live, "jenga_prompt_tokens_total") - prompt_metric == prompt_len
    assert _counter(live, "jenga_generation_tokens_total") - generated_metric >= 1


def test_disconnect_during_upload_is_one_log_line(live, caplog):
    """A client that leaves mid-body is a 499 in the log: one INFO line,
    no error, no traceback."""
    with caplog.at_level(logging.INFO, logger="jenga.server"):
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"model\": \"tiny\", ")
        _wait(lambda: any("disconnected during upload" in r.getMessage() for r in caplog.records))
    ours = [r for r in caplog.records if r.name == "jenga.server"]
    assert [r.levelno for r in ours] == [logging.INFO] and ours[0].exc_info is None
    assert "499" in ours[0].getMessage()
    assert httpx.get(live.root + "/health").status_code == 200


def test_non_streaming_disconnect_aborts_the_request(live):
    live.wait_idle()
    generated = live.on_engine(lambda e: e.stats().generated_tokens)
    errors = []

    def call():
        try:
            httpx.post(live.base_url + "/completions", json=LONG, timeout=0.5)
        except httpx.TimeoutException as e:
            errors.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    _wait(lambda: live.on_engine(lambda e: bool(e.scheduler.requests)))
    with Freezer(live):
        caller.join()   # the client gives up and closes its connection
        _wait(lambda: live.async_engine.num_in_flight == 0)
    assert errors, "the request should have outlived the client's timeout"
    live.wait_idle()
    assert live.on_engine(lambda e: e.stats().generated_tokens) - generated < 240
    _no_pages_held(live)


def test_shutdown_aborts_in_flight_requests_and_joins_the_thread(make_engine):
    from live import LiveServer

    server = LiveServer(make_engine())
    engine = server.engine
    client = httpx.Client(base_url=server.base_url, timeout=30)
    events = []

    def consume():
        try:
            with client.stream("POST", "/completions", json={**LONG, "stream": True}) as resp:
                for line in resp.iter_lines():
                    events.append(line)
        except httpx.HTTPError as e:   # the server may cut the connection: a clean end for the client
            events.append(type(e).__name__)

    reader = threading.Thread(target=consume)
    reader.start()
    _wait(lambda: len(events) >= 2)
    server.stop()
    reader.join(10)
    client.close()
    assert not reader.is_alive()
    assert not server.async_engine._thread.is_alive()
    assert not server.thread.is_alive()
    assert not server.async_engine.healthy
    assert not engine.has_unfinished_requests()
    engine.scheduler.manager.check_invariants()   # the engine thread is gone: safe to read here
    assert engine.scheduler.manager.reqs == {}
    assert len([e for e in events if e.startswith("data: {")]) < 240


@pytest.mark.parametrize("stream", [False, True])
def test_requests_finish_normally_leave_nothing_behind(live, stream):
    body = {**LONG, "max_tokens": 5, "stream": stream}
    r = httpx.post(live.base_url + "/completions", json=body, timeout=30)
    assert r.status_code == 200
    live.wait_idle()
    _no_pages_held(live)
