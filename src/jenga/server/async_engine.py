"""AsyncEngine: one background thread runs the engine; asyncio tasks talk to it.

The engine is not thread-safe, so exactly one thread ("jenga-engine")
touches it.  That thread runs `engine.step()` while requests are
unfinished and, between steps, executes commands queued by the event loop
(`add_request`, `abort`, metric snapshots, test probes).  When nothing is
left it blocks on the command queue, so an idle server burns no CPU.
Every step's outputs cross back to the event loop in one
`call_soon_threadsafe` and land in per-request asyncio queues: all
concurrent HTTP requests therefore batch together in the same steps.

A `RequestStream` aborts its request when it is closed before the request
finished (the client went away), so the request's pages are released at the
next step boundary.  Shutdown has two halves: `begin_drain` (when the
server stops accepting connections) refuses new requests and, once the
drain timeout expires, fails the requests still running with EngineDead
and aborts them, so their clients get a clean error while the connection
is still open; `shutdown` (the app's lifespan end) joins the thread.

A step that fails (`StepFailed`: the engine has already ended that step's
requests with "error" and freed their pages) fails those requests'
streams with RequestFailed, and the engine thread goes on serving the
rest.  When the engine cannot go on (its EngineDead: the failure repeated,
or a device error), or anything else escapes a step, the thread fails
every open stream with EngineDead, marks itself unhealthy and calls
`on_fatal` (the CLI then exits non-zero so that a supervisor restarts it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..engine.executor import StepFailed

T = TypeVar("T")
log = logging.getLogger("jenga.server")
_STOP = object()


class EngineDead(RuntimeError):
    """The engine thread stopped (shut down, or a step raised)."""


class RequestFailed(RuntimeError):
    """The engine failed this request (its step raised); others go on."""


class RequestStream:
    """Outputs of one request, in order, as the engine produces them.

    Iterate it with `async for`; iteration ends after the output whose
    `finished` is true.  Raises EngineDead if the engine stops first.
    `close()` must be called when the consumer is done (use try/finally):
    an unfinished request is then aborted.
    """

    def __init__(self, owner: AsyncEngine, request_id: str, arrival: float) -> None:
        self.owner, self.request_id, self.arrival = owner, request_id, arrival
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self.failed = False   # an error was (or is being) delivered instead of a final output
        self.first_token_time: float | None = None
        self.num_prompt_tokens = 0
        self.num_output_tokens = 0

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        if self.finished:
            raise StopAsyncIteration
        item = await self.queue.get()
        if isinstance(item, BaseException):
            self.finished = self.failed = True
            raise item
        self.finished = bool(item.finished)
        return item

    def close(self) -> None:
        """Idempotent.  Aborts the request in the engine unless it finished."""
        self.owner._close(self)


class AsyncEngine:
    """Serves one engine to many asyncio tasks (see module doc).

    `on_output(stream, output, now)` and `on_close(stream, reason)` (reason:
    None for a request that finished, "abort" or "error") are optional
    hooks (metrics); `on_fatal()` is called once the engine thread has
    failed for good.  All run on the event loop thread.
    """

    def __init__(self, engine: Any, *, on_output: Callable | None = None,
                 on_close: Callable | None = None, on_fatal: Callable | None = None) -> None:
        self.engine = engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}
        self._live: set[str] = set()   # engine-thread view of unfinished request ids
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_output, self._on_close, self.on_fatal = on_output, on_close, on_fatal
        self.error: BaseException | None = None
        self._stopping = False
        self._draining: asyncio.Task | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the engine thread; call from the event loop that will use it."""
        if self._thread is not None:
            raise RuntimeError("AsyncEngine already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="jenga-engine", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def begin_drain(self, drain_timeout_s: float) -> None:
        """Shutdown has begun: refuse new requests; requests still running
        after `drain_timeout_s` fail with EngineDead and are aborted.
        Idempotent; call on the event loop."""
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain(drain_timeout_s))

    async def _drain(self, drain_timeout_s: float) -> None:
        deadline = time.monotonic() + drain_timeout_s
        while self._streams and time.monotonic() < deadline and self.healthy:
            await asyncio.sleep(0.02)
        if self._streams:
            log.info("drain timeout (%.1f s) expired: failing %d request(s) still running",
                     drain_timeout_s, len(self._streams))
        self._fail(list(self._streams), EngineDead(f"server shut down before the request finished "
                                                   f"(drain timeout {drain_timeout_s:g} s)"))

    async def shutdown(self, drain_timeout_s: float = 0.0) -> None:
        """Drain (see begin_drain) if that has not begun, then stop and
        join the engine thread, which aborts whatever is left."""
        self.begin_drain(drain_timeout_s)
        await self._draining
        self._stopping = True
        if self._thread is not None:
            self._commands.put(_STOP)
            await asyncio.to_thread(self._thread.join)
        self._fail(list(self._streams), EngineDead("server is shutting down"))

    # -------------------------------------------------------------- requests
    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(engine)` on the engine thread between steps; returns its
        result or raises its exception."""
        if not self.healthy or self._stopping:
            raise EngineDead("engine is not running")
        if self._draining is not None:
            raise EngineDead("server is shutting down")
        fut = self._loop.create_future()
        self._commands.put((fn, fut))
        return await fut

    async def add_request(self, request_id: str, prompt: Any, params: Any, **extra: Any) -> RequestStream:
        """Queue a request; returns its stream.  Raises what
        `engine.add_request` raises (ValueError, QueueFull) or EngineDead.
        If the caller is cancelled meanwhile, the request is aborted."""
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already in use")
        stream = RequestStream(self, request_id, time.monotonic())
        stream.num_prompt_tokens = len(prompt) if not isinstance(prompt, str) else 0
        self._streams[request_id] = stream

        def add(engine: Any) -> None:
            engine.add_request(request_id, prompt, params, **extra)
            self._live.add(request_id)

        try:
            await self.call(add)
        except BaseException:
            self._streams.pop(request_id, None)
            self._submit(lambda e: self._abort_now(e, request_id))   # in case the add ran after all
            raise
        return stream

    def _close(self, stream: RequestStream) -> None:
        if self._streams.get(stream.request_id) is not stream:
            return
        del self._streams[stream.request_id]
        reason = "error" if stream.failed else None if stream.finished else "abort"
        if reason is not None:   # for "error", whoever failed it aborted it already; aborting twice is a no-op
            self._submit(lambda e: self._abort_now(e, stream.request_id))
        if self._on_close is not None:
            self._on_close(stream, reason)

    def _abort_now(self, engine: Any, request_id: str) -> None:
        if request_id in self._live:
            self._live.discard(request_id)
            engine.abort(request_id)

    def _submit(self, fn: Callable[[Any], Any]) -> None:
        """Fire-and-forget command (no-op once the thread is gone)."""
        if self._thread is not None and self._thread.is_alive():
            self._commands.put((fn, None))

    # ------------------------------------------------------- engine thread
    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                if not self._run_commands(block=not engine.has_unfinished_requests()):
                    break
                if not engine.has_unfinished_requests():
                    continue
                try:
                    outputs = engine.step()
                except StepFailed as e:
                    self._step_failed(e)
                    continue
                now = time.monotonic()
                for out in outputs:
                    if out.finished:
                        self._live.discard(out.request_id)
                if outputs:
                    self._to_loop(self._dispatch, outputs, now)
        except BaseException as e:   # the engine cannot go on: no client may be left hanging
            log.error("engine failed for good, failing every request: %s: %s", type(e).__name__, e, exc_info=e)
            self.error = e
            self._to_loop(self._fatal, EngineDead(f"engine failed ({type(e).__name__}); the server is stopping"))
            return
        for request_id in list(self._live):   # shutdown: release what is left
            self._abort_now(engine, request_id)

    def _step_failed(self, err: StepFailed) -> None:
        log.error("a step failed; its %d request(s) get an error, the engine goes on: %s: %s",
                  len(err.req_ids), type(err.cause).__name__, err.cause, exc_info=err.cause)
        self._live.difference_update(err.req_ids)   # the engine ended them already
        self._to_loop(self._fail, list(err.req_ids),
                      RequestFailed(f"the engine failed while running this request ({type(err.cause).__name__})"))

    def _run_commands(self, block: bool) -> bool:
        """Execute queued commands; False once asked to stop."""
        while True:
            try:
                item = self._commands.get(block=block)
            except queue.Empty:
                return True
            block = False
            if item is _STOP:
                return False
            fn, fut = item
            try:
                result = fn(self.engine)
            except Exception as e:
                if fut is not None:
                    self._to_loop(_settle, fut, None, e)
                else:
                    log.warning("engine command failed: %s", e)
            else:
                if fut is not None:
                    self._to_loop(_settle, fut, result, None)

    def _to_loop(self, fn: Callable, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # loop closed: nobody is listening any more
            pass

    # ---------------------------------------------------------- event loop
    def _dispatch(self, outputs: list, now: float) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None or stream.failed:
                continue   # closed by its consumer or failed; the abort is on its way
            n = len(out.outputs[0].token_ids) if out.outputs else 0
            if n and stream.first_token_time is None:
                stream.first_token_time = now
            stream.num_output_tokens = n
            if self._on_output is not None:
                self._on_output(stream, out, now)
            stream.queue.put_nowait(out)

    def _fail(self, request_ids: list[str], err: BaseException) -> None:
        """End these requests' streams with `err` and abort them in the engine."""
        for request_id in request_ids:
            stream = self._streams.get(request_id)
            if stream is not None and not stream.failed:
                stream.failed = True
                stream.queue.put_nowait(err)
                self._submit(lambda e, r=request_id: self._abort_now(e, r))

    def _fatal(self, err: BaseException) -> None:
        self._fail(list(self._streams), err)
        if self.on_fatal is not None:
            self.on_fatal()


def _settle(fut: asyncio.Future, result: Any, err: BaseException | None) -> None:
    if fut.done():   # the awaiting task was cancelled
        return
    if err is not None:
        fut.set_exception(err)
    else:
        fut.set_result(result)
