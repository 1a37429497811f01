"""The FastAPI app: OpenAI-compatible routes over one AsyncEngine.

`build_app(engine, config)` wires the routes, the API-key check, the error
handlers and the engine thread's lifespan.  Handlers read the body on the
event loop (415 unless JSON, 413 past the limit), then parse, check and
tokenise it on a worker thread (prepare.py) so that no request's CPU work
stalls the loop, then hand token ids to the AsyncEngine; everything the
engine touches happens on its own thread.
Streaming responses are Server-Sent Events ending in `data: [DONE]`.
A client that disconnects has its request aborted at once: streaming
responses close their stream when Starlette stops them, non-streaming
ones race the result against the `http.disconnect` message.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..engine.stats_logger import StatsLogger
from ..sched.scheduler import QueueFull
from .async_engine import AsyncEngine, EngineDead, RequestFailed, RequestStream
from .errors import APIError, api_error_handler, engine_error, from_value_error, overloaded, unexpected_error_handler
from .images import ImageLimits
from .metrics import CONTENT_TYPE, ServerMetrics, snapshot
from .prepare import Prepared, RequestPreparer
from .protocol import ModelCard, ModelList
from .streaming import SSEResponse, chat_response, chat_sse, completion_response, completion_sse

log = logging.getLogger("jenga.server")

@dataclass(frozen=True)
class ServerConfig:
    """What the HTTP layer needs besides the engine.

    api_key: when set, /v1/* requires `Authorization: Bearer <api_key>`.
    drain_timeout_s: on shutdown, how long in-flight requests may finish;
        those still running then get a clean error (503 body / error event).
    retry_after_s: the Retry-After sent with 503 when the queue is full.
    max_body_bytes: largest request body (413 beyond it); None derives it
        from the context: 1 MiB + 12 bytes (JSON's worst escape) per
        character the longest prompt may have, plus four base64 images of
        max_image_bytes when the model takes images.
    allowed_origins: origins granted CORS (e.g. "http://localhost:3000",
        or "*"); empty (the default) sends no CORS headers, so web pages
        cannot drive the server from a browser.
    log_stats_interval_s: seconds between the periodic stats lines
        (engine/stats_logger.py) while the engine is busy; None: off.
    """

    served_model_name: str
    api_key: str | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    allowed_local_media_path: str | None = None
    drain_timeout_s: float = 5.0
    retry_after_s: int = 1
    max_body_bytes: int | None = None
    allowed_origins: tuple[str, ...] = ()
    log_stats_interval_s: float | None = 10.0

    def __post_init__(self) -> None:
        if self.log_stats_interval_s is not None and not self.log_stats_interval_s > 0:
            raise ValueError(f"log_stats_interval_s must be > 0 or None, got {self.log_stats_interval_s!r}")
        if not self.served_model_name:
            raise ValueError("served_model_name must be non-empty")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be non-empty when given")
        if self.max_image_bytes <= 0:
            raise ValueError(f"max_image_bytes must be positive, got {self.max_image_bytes}")
        if self.drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {self.drain_timeout_s}")
        if self.retry_after_s <= 0:
            raise ValueError(f"retry_after_s must be positive, got {self.retry_after_s}")
        if self.max_body_bytes is not None and self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive or None, got {self.max_body_bytes}")
        if any(not o for o in self.allowed_origins):
            raise ValueError("allowed_origins must hold non-empty origins")


PREP_THREADS = 4   # requests parsed and tokenised at once, off the event loop


class _Server:
    """Per-app state: the request preparer, the AsyncEngine, metrics."""

    def __init__(self, engine: Any, config: ServerConfig) -> None:
        self.config, self.engine = config, engine
        self.metrics = ServerMetrics()
        self.async_engine = AsyncEngine(engine, on_output=self.metrics.on_output, on_close=self.metrics.on_close)
        if config.log_stats_interval_s is not None:   # vLLM's periodic stats line, a step observer
            engine.add_step_observer(StatsLogger(engine, config.log_stats_interval_s))
        self.max_model_len = int(engine.scheduler.max_model_len)
        tokenizer = engine.tokenizer
        self.preparer = RequestPreparer(
            tokenizer=tokenizer, served_model_name=config.served_model_name, max_model_len=self.max_model_len,
            vocab_size=int(getattr(engine, "vocab_size", None) or tokenizer.vocab_size),
            image_limits=ImageLimits(config.max_image_bytes, config.allowed_local_media_path),
            accepts_images=bool(getattr(engine, "supports_images", False)))
        self.max_body_bytes = config.max_body_bytes or self._derived_body_limit()
        self.prep_pool = ThreadPoolExecutor(PREP_THREADS, thread_name_prefix="jenga-prep")

    def _derived_body_limit(self) -> int:
        images = 4 * (self.config.max_image_bytes * 4 // 3 + 1024) if self.preparer.accepts_images else 0
        return 2**20 + 12 * self.preparer.max_prompt_chars + images

    async def prepare(self, fn: Callable[[bytes], Prepared], body: bytes) -> Prepared:
        """fn(body) on a worker thread (module doc of prepare.py)."""
        return await asyncio.get_running_loop().run_in_executor(self.prep_pool, fn, body)

    async def submit(self, prefix: str, prep: Prepared) -> RequestStream:
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        extra = {"images": prep.images} if prep.images else {}
        try:
            return await self.async_engine.add_request(request_id, prep.token_ids, prep.params, **extra)
        except QueueFull as e:
            self.metrics.rejected.labels("queue_full").inc()
            raise overloaded(f"server is at capacity ({e}); retry later", self.config.retry_after_s) from None
        except ValueError as e:
            self.metrics.rejected.labels("invalid").inc()
            # a request too large for the pool: blame max_tokens only if the client chose it
            raise from_value_error(e, prep.size_param if "KV memory" in str(e) else prep.prompt_param) from None
        except (EngineDead, RequestFailed) as e:
            raise engine_error(e) from None


class ClientGone(Exception):
    """The client closed the connection before its body arrived."""


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; 415 unless it is declared JSON (so a web page
    cannot send one as a CORS "simple request"), 413 as soon as it grows
    past `limit` bytes.  Raises ClientGone if the client leaves."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(f"Content-Type must be application/json, got {kind or 'none'!r}", status=415)
    # "Connection: close" makes uvicorn drop the connection after the 413
    # instead of reading (and discarding) the rest of a huge upload
    too_large = APIError(f"request body is larger than {limit} bytes", status=413, headers={"Connection": "close"})
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise ClientGone from None
    return bytes(body)


async def _client_gone_handler(request: Request, _: ClientGone) -> Response:
    log.info("%s %s: client disconnected during upload (499)", request.method, request.url.path)
    return Response(status_code=499)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _final_output(stream: RequestStream, request: Request) -> Any | None:
    """The request's last output, or None if the client disconnected first
    (the request is then aborted)."""
    async def last() -> Any:
        out = None
        async for out in stream:
            pass
        return out

    result, watcher = asyncio.ensure_future(last()), asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait((result, watcher), return_when=asyncio.FIRST_COMPLETED)
        if not result.done():
            result.cancel()
            return None
        return result.result()
    finally:
        watcher.cancel()
        result.cancel()   # no-op when done; stops the reader if we were cancelled ourselves
        stream.close()


async def _collect(stream: RequestStream, request: Request, make_body) -> Response:
    """A non-streaming response from the request's final output."""
    try:
        out = await _final_output(stream, request)
    except (EngineDead, RequestFailed) as e:
        raise engine_error(e) from None
    if out is None:
        return Response(status_code=499)   # nobody is listening; nginx's "client closed request"
    return JSONResponse(make_body(out).model_dump())


def _add_routes(app: FastAPI, server: _Server) -> None:
    cfg = server.config

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if server.async_engine.healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        snap = await server.async_engine.call(snapshot) if server.async_engine.healthy else None
        return Response(server.metrics.render(snap), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict:
        card = ModelCard(id=cfg.served_model_name, max_model_len=server.max_model_len)
        return ModelList(data=[card]).model_dump()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        prep = await server.prepare(server.preparer.completion, await _read_body(request, server.max_body_bytes))
        stream = await server.submit("cmpl", prep)
        if prep.stream:
            return SSEResponse(completion_sse(stream, cfg.served_model_name, prep.include_usage), stream)
        return await _collect(stream, request,
                              lambda out: completion_response(stream.request_id, cfg.served_model_name, out))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        prep = await server.prepare(server.preparer.chat, await _read_body(request, server.max_body_bytes))
        stream = await server.submit("chatcmpl", prep)
        if prep.stream:
            return SSEResponse(chat_sse(stream, cfg.served_model_name, prep.include_usage, prep.params.n), stream)
        return await _collect(stream, request,
                              lambda out: chat_response(stream.request_id, cfg.served_model_name, out))


def _add_auth(app: FastAPI, api_key: str | None) -> None:
    if api_key is None:
        return
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return APIError("Incorrect or missing API key; send Authorization: Bearer <key>", status=401,
                                code="invalid_api_key").response()
        return await call_next(request)


async def _http_error_handler(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return APIError(str(exc.detail), status=exc.status_code, type=kind).response()


def build_app(engine: Any, config: ServerConfig) -> FastAPI:
    """An app serving `engine`; the engine thread starts and stops with the
    app's lifespan (shutdown drains for `config.drain_timeout_s`)."""
    server = _Server(engine, config)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        server.async_engine.start()
        try:
            yield
        finally:
            await server.async_engine.shutdown(config.drain_timeout_s)
            server.prep_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="jenga", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(ClientGone, _client_gone_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    _add_auth(app, config.api_key)
    if config.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins),
                           allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
    _add_routes(app, server)
    return app
