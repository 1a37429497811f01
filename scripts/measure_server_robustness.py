"""Measure how `jenga serve` (no flags: the bundled SmolLM2, the default pool)
holds up: /health latency and another client's stream gaps while hostile
requests are refused, and what SIGTERM does to requests in flight.

    python scripts/measure_server_robustness.py [--repeats 5] [--src DIR] [--out FILE]

Each repeat starts nothing new: one server runs every hostile case in turn
(interleaved with a quiet baseline), each case `--repeats` times; medians are
reported.  `--src` runs the server from another source tree (an older
checkout, for a before/after comparison).  The drain measurement restarts
the server once per repeat.  Results are a program's output, not a test:
the machine is shared, so its load average is printed beside the numbers.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(src: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "JENGA_API_KEY": ""}
    if src:
        env["PYTHONPATH"] = src
    proc = subprocess.Popen([sys.executable, "-m", "jenga.cli", "serve", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + proc.stderr.read()[-2000:])
        try:
            if httpx.get(root + "/health", timeout=1).status_code == 200:
                return proc, root
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def _chat(content) -> dict:
    return {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": content}]}


def hostile_bodies() -> dict[str, bytes]:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return {
        "20 MB prompt": json.dumps(_chat("x" * 20_000_000)).encode(),
        "5 MB prompt": json.dumps(_chat("word " * 1_000_000)).encode(),
        "8000x8000 image": json.dumps(_chat([{"type": "text", "text": "what is it"},
                                             {"type": "image_url", "image_url": {"url": image}}])).encode(),
    }


def one_case(root: str, body: bytes | None) -> dict:
    """A 48-token stream runs; once it flows, `body` (None: nothing) is
    sent; /health is polled every 20 ms until the refusal arrives."""
    times: list[float] = []
    flowing = threading.Event()
    # clients made up front: a new httpx client builds an SSL context, which
    # holds this process's GIL while it times the server
    streaming, poller, sender = (httpx.Client(timeout=300) for _ in range(3))

    def stream() -> None:
        req = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 48, "ignore_eos": True, "stream": True}
        with streaming.stream("POST", root + "/v1/completions", json=req) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    times.append(time.monotonic())
                    flowing.set()

    streamer = threading.Thread(target=stream)
    streamer.start()
    flowing.wait(120)
    result: dict = {}

    def attack() -> None:
        t0 = time.monotonic()
        try:
            r = sender.post(root + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            result["status"] = r.status_code
        except httpx.HTTPError as e:
            result["status"] = type(e).__name__
        result["refused_s"] = time.monotonic() - t0

    attacker = threading.Thread(target=attack) if body is not None else None
    t_attack = time.monotonic()
    if attacker:
        attacker.start()
    health: list[float] = []
    while (attacker and attacker.is_alive()) or (not attacker and time.monotonic() - t_attack < 1.0):
        t0 = time.monotonic()
        poller.get(root + "/health")
        health.append(time.monotonic() - t0)
        time.sleep(0.02)
    streamer.join()
    for c in (streaming, poller, sender):
        c.close()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {**result, "health_max_s": max(health), "health_median_s": statistics.median(health),
            "gap_max_s": max(gaps), "gap_median_s": statistics.median(gaps)}


def drain_case(src: str | None) -> dict:
    """SIGTERM with a short stream (8 tokens), a long stream and a long
    non-streaming request in flight; the default drain timeout is 5 s."""
    proc, root = start_server(src, [])
    url = root + "/v1/completions"
    base = {"model": MODEL, "prompt": "Once upon a time", "ignore_eos": True}
    out: dict = {}
    started = {k: threading.Event() for k in ("short", "long")}

    def stream(name: str, n: int) -> None:
        last = ""
        try:
            with httpx.stream("POST", url, json={**base, "max_tokens": n, "stream": True}, timeout=300) as r:
                for line in r.iter_lines():
                    if line:
                        last = line if line != "data: [DONE]" else last
                        started[name].set()
            out[name] = (time.monotonic(), "error event" if "error" in last else "finished")
        except httpx.HTTPError as e:   # the connection was cut
            out[name] = (time.monotonic(), type(e).__name__)

    def plain() -> None:
        try:
            r = httpx.post(url, json={**base, "max_tokens": 4000}, timeout=300)
            out["plain"] = (time.monotonic(), r.status_code)
        except httpx.HTTPError as e:
            out["plain"] = (time.monotonic(), type(e).__name__)

    threads = [threading.Thread(target=stream, args=("long", 4000)), threading.Thread(target=plain)]
    for t in threads:
        t.start()
    started["long"].wait(120)
    threads.append(threading.Thread(target=stream, args=("short", 8)))
    threads[-1].start()
    started["short"].wait(120)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    code = proc.wait(120)
    t_exit = time.monotonic()
    err = proc.stderr.read()
    return {"short_done_s": out["short"][0] - t0, "short_end": out["short"][1],
            "long_end_s": out["long"][0] - t0, "long_end": out["long"][1],
            "plain_s": out["plain"][0] - t0, "plain_status": out["plain"][1],
            "exit_s": t_exit - t0, "exit_code": code, "tracebacks": err.count("Traceback")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--src", default=None, help="source tree to serve from (default: the installed jenga)")
    ap.add_argument("--skip-drain", action="store_true")
    args = ap.parse_args()
    print(f"load average before: {open('/proc/loadavg').read().split()[:3]}")
    bodies = hostile_bodies()
    proc, root = start_server(args.src, [])
    runs: dict[str, list[dict]] = {"quiet (no hostile request)": [], **{k: [] for k in bodies}}
    try:
        for _ in range(args.repeats):   # interleaved: every case once per round
            runs["quiet (no hostile request)"].append(one_case(root, None))
            for name, body in bodies.items():
                runs[name].append(one_case(root, body))
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"\n| case | status | refused after (s) | /health max (s) | /health median (s) | "
          f"stream gap max (s) | stream gap median (s) |\n|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        med = lambda k: statistics.median(r[k] for r in rs)   # noqa: E731
        status = ",".join(sorted({str(r.get("status", "-")) for r in rs}))
        refused = f"{med('refused_s'):.2f}" if "refused_s" in rs[0] else "-"
        print(f"| {name} | {status} | {refused} | {med('health_max_s'):.3f} | {med('health_median_s'):.3f} | "
              f"{med('gap_max_s'):.3f} | {med('gap_median_s'):.3f} |")
    if not args.skip_drain:
        drains = [drain_case(args.src) for _ in range(max(1, args.repeats // 2))]
        print("\n| after SIGTERM | " + " | ".join(f"run {i + 1}" for i in range(len(drains))) + " |")
        print("|---|" + "---|" * len(drains))
        for key in drains[0]:
            cells = [f"{d[key]:.2f}" if isinstance(d[key], float) else str(d[key]) for d in drains]
            print(f"| {key} | " + " | ".join(cells) + " |")
    print(f"\nload average after: {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
