"""Run a jenga server in-process: uvicorn on a free 127.0.0.1 port, in a
background thread, with a way to run code on the engine thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from jenga.server.app import ServerConfig, build_app
from jenga.server.run import DrainingServer


MAX_MODEL_LEN = 256


def make_tiny_engine(model_dir, max_waiting: int | None = None, **kw):
    """An LLMEngine over the tiny model (fp32 on CPU, 256-token context)."""
    from jenga.engine.config import EngineConfig
    from jenga.engine.llm_engine import LLMEngine

    kw.setdefault("kv_cache_memory", 4 * 2**20)
    kw.setdefault("max_num_seqs", 32)
    if max_waiting is not None:
        kw["max_waiting"] = max_waiting
    return LLMEngine(EngineConfig(model=str(model_dir), device="cpu", max_model_len=MAX_MODEL_LEN, **kw))


class LiveServer:
    """Serves `engine` until `stop()`; `base_url` ends in /v1."""

    def __init__(self, engine, **config) -> None:
        config.setdefault("served_model_name", "tiny")
        config.setdefault("drain_timeout_s", 0.0)
        self.engine = engine
        self.app = build_app(engine, ServerConfig(**config))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = self.root + "/v1"
        self.server = DrainingServer(self.app, log_level="critical")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)

    @property
    def async_engine(self):
        return self.app.state.server.async_engine

    def on_engine(self, fn, timeout: float = 30.0):
        """Run fn(engine) on the engine thread between steps; its result."""
        ae = self.async_engine
        return asyncio.run_coroutine_threadsafe(ae.call(fn), ae._loop).result(timeout)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until the engine has no unfinished request and no stream is open."""
        deadline = time.monotonic() + timeout
        while self.async_engine.num_in_flight or self.on_engine(lambda e: e.has_unfinished_requests()):
            if time.monotonic() > deadline:
                raise TimeoutError("engine still busy")
            time.sleep(0.01)

    def stop(self) -> None:
        """What SIGTERM does: drain, then exit."""
        self.server.stop()
        self.thread.join(30)
        self.sock.close()
