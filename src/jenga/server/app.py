"""The FastAPI app: OpenAI-compatible routes over one AsyncEngine.

`build_app(engine, config)` wires the routes, the API-key check, the error
handlers and the engine thread's lifespan.  Handlers validate and tokenize
in the event loop (tokenizers are thread-safe), then hand token ids to the
AsyncEngine; everything the engine touches happens on its own thread.
Streaming responses are Server-Sent Events ending in `data: [DONE]`.
A client that disconnects has its request aborted at once: streaming
responses close their stream when Starlette stops them, non-streaming
ones race the result against the `http.disconnect` message.
"""

from __future__ import annotations

import asyncio
import hmac
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..sched.scheduler import QueueFull
from .async_engine import AsyncEngine, EngineDead, RequestStream
from .chat import render_chat
from .errors import APIError, api_error_handler, from_value_error, invalid, overloaded, unexpected_error_handler
from .images import ImageLimits
from .metrics import CONTENT_TYPE, ServerMetrics, snapshot
from .protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, parse
from .streaming import SSEResponse, chat_response, chat_sse, completion_response, completion_sse

@dataclass(frozen=True)
class ServerConfig:
    """What the HTTP layer needs besides the engine.

    api_key: when set, /v1/* requires `Authorization: Bearer <api_key>`.
    drain_timeout_s: on shutdown, how long in-flight requests may finish.
    retry_after_s: the Retry-After sent with 503 when the queue is full.
    """

    served_model_name: str
    api_key: str | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    allowed_local_media_path: str | None = None
    drain_timeout_s: float = 5.0
    retry_after_s: int = 1
    max_body_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
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
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")


class _Server:
    """Per-app state: engine facts read once, the AsyncEngine, metrics."""

    def __init__(self, engine: Any, config: ServerConfig) -> None:
        self.config, self.engine = config, engine
        self.metrics = ServerMetrics()
        self.async_engine = AsyncEngine(engine, on_output=self.metrics.on_output, on_close=self.metrics.on_close)
        self.tokenizer = engine.tokenizer
        self.max_model_len = int(engine.scheduler.max_model_len)
        self.accepts_images = bool(getattr(engine, "supports_images", False))
        self.vocab_size = int(getattr(engine, "vocab_size", None) or self.tokenizer.vocab_size)
        self.image_limits = ImageLimits(config.max_image_bytes, config.allowed_local_media_path)

    def check_model(self, name: str) -> None:
        if name != self.config.served_model_name:
            raise invalid(f"The model `{name}` does not exist; this server serves "
                          f"`{self.config.served_model_name}`", "model")

    def resolve_max_tokens(self, requested: int | None, prompt_len: int, prompt_param: str) -> int:
        """max_tokens checked against the context (default: the rest of it)."""
        room = self.max_model_len - prompt_len
        if room < 1:
            raise invalid(f"This model's maximum context length is {self.max_model_len} tokens, but the "
                          f"prompt has {prompt_len} tokens (at least one output token must fit)", prompt_param)
        if requested is None:
            return room
        if requested > room:
            raise invalid(f"This model's maximum context length is {self.max_model_len} tokens; you asked "
                          f"for {prompt_len + requested} ({prompt_len} in the prompt, {requested} in the "
                          f"completion)", "max_tokens")
        return requested

    def prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
            if not ids:
                raise invalid("prompt encodes to no tokens", "prompt")
            return ids
        vocab = self.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise invalid(f"prompt token ids must lie in [0, {vocab})", "prompt")
        return list(prompt)

    async def submit(self, prefix: str, ids: list[int], params: Any, prompt_param: str,
                     **extra: Any) -> RequestStream:
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        try:
            return await self.async_engine.add_request(request_id, ids, params, **extra)
        except QueueFull as e:
            self.metrics.rejected.labels("queue_full").inc()
            raise overloaded(f"server is at capacity ({e}); retry later", self.config.retry_after_s) from None
        except ValueError as e:
            self.metrics.rejected.labels("invalid").inc()
            raise from_value_error(e, prompt_param) from None
        except EngineDead as e:
            raise APIError(str(e), status=503, type="server_error") from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; a 413 as soon as it grows past `limit` bytes."""
    too_large = APIError(f"request body is larger than {limit} bytes", status=413)
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


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
    except EngineDead as e:
        raise APIError(str(e), status=503, type="server_error") from None
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
        req = parse(CompletionRequest, await _read_body(request, cfg.max_body_bytes))
        server.check_model(req.model)
        req.check(server.max_model_len)
        ids = server.prompt_ids(req.single_prompt())
        params = req.sampling_params(server.resolve_max_tokens(req.max_tokens, len(ids), "prompt"))
        stream = await server.submit("cmpl", ids, params, "prompt")
        if req.stream:
            return SSEResponse(completion_sse(stream, cfg.served_model_name, req.include_usage), stream)
        return await _collect(stream, request,
                              lambda out: completion_response(stream.request_id, cfg.served_model_name, out))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req = parse(ChatCompletionRequest, await _read_body(request, cfg.max_body_bytes))
        server.check_model(req.model)
        req.check(server.max_model_len)
        prompt = render_chat(req, server.tokenizer, server.image_limits, server.accepts_images)
        params = req.sampling_params(server.resolve_max_tokens(req.max_tokens, len(prompt.token_ids), "messages"))
        extra = {"images": prompt.images} if prompt.images else {}
        stream = await server.submit("chatcmpl", prompt.token_ids, params, "messages", **extra)
        if req.stream:
            return SSEResponse(chat_sse(stream, cfg.served_model_name, req.include_usage), stream)
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

    app = FastAPI(title="jenga", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    _add_auth(app, config.api_key)
    _add_routes(app, server)
    return app
