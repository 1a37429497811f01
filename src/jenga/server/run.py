"""Running a built app under uvicorn: a drain that ends cleanly, and an exit
status that tells a supervisor the engine failed.

uvicorn's own graceful shutdown cancels the connections still open when
its timeout expires, so their clients see a cut connection.  Here the drain
starts when the shutdown signal arrives (`handle_exit`): requests that end
within `drain_timeout_s` finish normally, and those still running then get
a clean error (a 503 body, or an error event and `data: [DONE]`) while
their connections are still open; uvicorn's timeout is set a few seconds
later as a backstop.  When the engine fails for good (see async_engine.py)
the server stops itself and `run` returns 1.
"""

from __future__ import annotations

import asyncio
import socket
from types import FrameType
from typing import Any

import uvicorn

# seconds uvicorn waits past the drain timeout before it cuts connections
BACKSTOP_S = 5.0


class DrainingServer(uvicorn.Server):
    """A uvicorn Server that starts the app's drain on shutdown and stops
    when its engine fails.  `stop()` does what SIGTERM does, from any thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.jenga = app.state.server
        drain = self.jenga.config.drain_timeout_s
        super().__init__(uvicorn.Config(app, timeout_graceful_shutdown=drain + BACKSTOP_S, **config))
        self.jenga.async_engine.on_fatal = self._engine_failed
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.stop()

    def stop(self) -> None:
        """Begin the drain; the server exits once its connections close."""
        self.should_exit = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.jenga.async_engine.begin_drain, self.jenga.config.drain_timeout_s)

    def _engine_failed(self) -> None:
        self.should_exit = True

    @property
    def engine_failed(self) -> bool:
        return self.jenga.async_engine.error is not None


def run(app: Any, *, host: str, port: int, log_level: str = "info") -> int:
    """Serve `app` until a shutdown signal (returns 0) or until its engine
    fails for good (returns 1)."""
    server = DrainingServer(app, host=host, port=port, log_level=log_level)
    server.run()
    return 1 if server.engine_failed else 0
