"""`jenga serve --tensor-parallel-size 2` as a real process on CPU: it
spawns one worker, answers the openai client with the text TP=1 gives, and
when the server is SIGKILLed its worker exits by itself (no orphan)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from jenga.sched.params import SamplingParams

PROMPT = "hello world, how are you"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"   # a zombie has exited


def _poll(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from jenga.cli import main; sys.exit(main())", "serve",
           str(tiny_model_dir), "--port", str(port), "--served-model-name", "tiny", "--tensor-parallel-size", "2",
           "--kv-cache-memory", "2MiB", "--max-model-len", "256", "--log-level", "warning"]
    # one torch thread per rank: the ranks share the machine's cores
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, f"jenga serve exited with {proc.returncode}"
        try:
            return httpx.get(base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        _poll(up, 240, "jenga serve --tensor-parallel-size 2 to come up")
        yield proc, base + "/v1"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_tp2_server_answers_like_tp1_and_leaves_no_orphan(server, make_engine):
    proc, url = server
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    got = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0.0)
    reference = make_engine()
    reference.add_request("ref", PROMPT, SamplingParams(max_tokens=12, temperature=0.0))
    final = None
    while reference.has_unfinished_requests():
        for out in reference.step():
            final = out
    assert got.choices[0].text == final.outputs[0].text
    assert got.choices[0].finish_reason == final.outputs[0].finish_reason
    workers = _children(proc.pid)
    assert len(workers) == 1 and _alive(workers[0])
    os.kill(proc.pid, signal.SIGKILL)   # no close(): the worker must notice by itself
    proc.wait()
    _poll(lambda: not _alive(workers[0]), 15, "the orphaned worker to exit")
