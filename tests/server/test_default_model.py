"""`jenga serve` as a new user starts it, with no flags, over the bundled
SmolLM2 (a subprocess on a free loopback port): the openai client's plain
call succeeds, hostile requests are refused without stalling /health or
another client's stream, and SIGTERM drains: what ends within the drain
timeout ends normally, the rest gets a clean error (the last test here)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

# generous (/health and the stream may also take 4x their quiet pace on a loaded machine): the
# measured figures are in docs/results/server-robustness.md
HEALTH_BOUND_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    try:
        from jenga.model.gguf_convert import default_model_path
        default_model_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "jenga.cli", "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JENGA_API_KEY": ""})
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, "jenga serve exited during start-up"
        assert time.monotonic() < deadline, "jenga serve did not start"
        try:
            if httpx.get(root + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield root, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(60)
    log.seek(0)
    assert "Traceback" not in log.read()


def test_plain_openai_chat_call_succeeds(default_server):
    root, _ = default_server
    client = openai.OpenAI(base_url=root + "/v1", api_key="none", max_retries=0, timeout=300)
    reply = client.chat.completions.create(model="smollm2-135m-instruct",
                                           messages=[{"role": "user", "content": "Say hello."}])
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens >= 1 and reply.choices[0].message.content
    card = httpx.get(root + "/v1/models").json()["data"][0]
    assert card["max_model_len"] == 8192   # the default CPU pool holds the model's whole context


def _png_bomb() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")   # 64 Mpixel in a few KiB
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _timed_health(client: httpx.Client, root: str) -> float:
    t0 = time.monotonic()
    assert client.get(root + "/health").status_code == 200
    return time.monotonic() - t0


def test_hostile_requests_stall_neither_health_nor_streams(default_server):
    root, _ = default_server
    url = root + "/v1"
    chat = lambda content: {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}]}  # noqa: E731
    image = chat([{"type": "text", "text": "what is it"}, {"type": "image_url", "image_url": {"url": _png_bomb()}}])
    hostile = [("20 MB prompt", json.dumps(chat("x" * 20_000_000)).encode(), {413}),
               ("2 MB prompt", json.dumps(chat("word " * 400_000)).encode(), {400}),
               ("8000x8000 image", json.dumps(image).encode(), {400})]
    # clients made up front: each new httpx client builds an SSL context, which
    # would hold this process's GIL while it times the server
    clients = [httpx.Client(timeout=120) for _ in range(len(hostile) + 2)]
    stream_times: list[float] = []
    health: list[float] = []
    statuses: dict[str, int] = {}
    started = threading.Event()

    def stream() -> None:
        body = {"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 48,
                "ignore_eos": True, "stream": True}
        with clients[0].stream("POST", url + "/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    stream_times.append(time.monotonic())
                    started.set()

    def attack(name: str, body: bytes, client: httpx.Client) -> None:
        try:
            r = client.post(url + "/chat/completions", content=body, headers={"content-type": "application/json"})
            statuses[name] = r.status_code
        except httpx.HTTPError:   # the server may answer 413 and close before the upload ends
            statuses[name] = 413

    streamer = threading.Thread(target=stream)
    streamer.start()
    assert started.wait(60)
    while len(stream_times) < 4:   # the stream's own pace first: the machine may be loaded
        time.sleep(0.01)
    quiet = sorted(b - a for a, b in zip(stream_times, stream_times[1:]))[1]
    n_quiet = len(stream_times)
    quiet_health = sorted(_timed_health(clients[1], root) for _ in range(5))[2]
    attackers = [threading.Thread(target=attack, args=(n, b, c)) for (n, b, _), c in zip(hostile, clients[2:])]
    for t in attackers:
        t.start()
    while any(t.is_alive() for t in attackers):
        health.append(_timed_health(clients[1], root))
        time.sleep(0.02)
    streamer.join(120)
    for c in clients:
        c.close()
    assert {n: statuses[n] for n, _, _ in hostile} == {n: next(iter(s)) for n, _, s in hostile}
    assert max(health) < max(HEALTH_BOUND_S, 4 * quiet_health), (quiet_health, health)
    gaps = [b - a for a, b in zip(stream_times[n_quiet - 1:], stream_times[n_quiet:])]
    assert len(stream_times) >= 10 and max(gaps) < max(HEALTH_BOUND_S, 4 * quiet), (quiet, gaps)


def _collect_stream(url: str, body: dict, events: list, first: threading.Event) -> None:
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as r:
        for line in r.iter_lines():
            if line:
                events.append(line)
                first.set()


def test_sigterm_finishes_short_requests_and_fails_long_ones_cleanly(default_server):
    """Runs last: it stops the server.  The default drain timeout is 5 s."""
    root, proc = default_server
    url = root + "/v1/completions"
    base = {"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "ignore_eos": True}
    short, long = ([], threading.Event()), ([], threading.Event())
    plain: dict = {}

    def post_long() -> None:
        r = httpx.post(url, json={**base, "max_tokens": 4000}, timeout=120)
        plain.update(status=r.status_code, body=r.json())

    threads = [threading.Thread(target=_collect_stream, args=(url, {**base, "max_tokens": 4000}, *long)),
               threading.Thread(target=post_long)]
    for t in threads:
        t.start()
    assert long[1].wait(60)
    threads.append(threading.Thread(target=_collect_stream, args=(url, {**base, "max_tokens": 8}, *short)))
    threads[-1].start()
    assert short[1].wait(60)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert short[0][-1] == "data: [DONE]" and "error" not in short[0][-2]
    assert json.loads(short[0][-2][6:])["choices"][0]["finish_reason"] == "length"
    assert long[0][-1] == "data: [DONE]"
    err = json.loads(long[0][-2][6:])["error"]
    assert err["type"] == "server_error" and "drain timeout" in err["message"]
    assert plain["status"] == 503 and "drain timeout" in plain["body"]["error"]["message"]
    assert proc.wait(60) in (0, -signal.SIGTERM)
