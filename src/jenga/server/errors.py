"""OpenAI-style error responses for the HTTP server.

Every failure a client can cause becomes an `APIError` carrying the HTTP
status, a message and the request field (`param`) at fault; the app turns
it into `{"error": {"message", "type", "param", "code"}}`.  Anything
unexpected becomes a 500 with a generic message: a stack trace never
reaches a response (it goes to the server log instead).
"""

from __future__ import annotations

import logging
import re

from fastapi import Request
from fastapi.responses import JSONResponse

from .async_engine import RequestFailed

log = logging.getLogger("jenga.server")

# Field names our validators put first in ValueError messages
# ("max_tokens must be ...", as SamplingParams writes them).
_LEADING_FIELD = re.compile(r"^([a-z_]+) (?:must|is|are)\b")


class APIError(Exception):
    """A request the server refuses, with what to tell the client.

    status: HTTP status.  param: the offending request field or None.
    headers: extra response headers (Retry-After on 503).
    """

    def __init__(self, message: str, *, status: int = 400, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.type = message, status, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None) -> APIError:
    """A 400 for bad input naming `param`."""
    return APIError(message, status=400, param=param)


def from_value_error(err: ValueError, default_param: str | None) -> APIError:
    """A 400 from a library ValueError; its leading field name, if any,
    becomes `param` (SamplingParams and the engine name the field first)."""
    text = str(err) or "invalid request"
    m = _LEADING_FIELD.match(text)
    return invalid(text, m.group(1) if m else default_param)


def overloaded(message: str, retry_after_s: int = 1) -> APIError:
    """A 503 telling the client to come back (full waiting queue)."""
    return APIError(message, status=503, type="server_overloaded", code="queue_full",
                    headers={"Retry-After": str(retry_after_s)})


def engine_error(err: Exception) -> APIError:
    """What a client sees when the engine fails its request: 503 when the
    engine stopped (shutdown, fatal failure), 500 when a step failed."""
    return APIError(str(err), status=500 if isinstance(err, RequestFailed) else 503, type="server_error")


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before"}


def _is_branch(item: str) -> bool:
    """pydantic names union branches by type ("str", "list[int]")."""
    return "[" in item or item in _TYPE_NAMES


def pydantic_param(loc: tuple) -> str | None:
    """Turn a pydantic error location into an OpenAI-style param path
    (`messages[1].role`): union-branch names and discriminator tags, which
    are not fields, are left out; model-level errors give None."""
    parts: list[str] = []
    in_union = skip_tag = False
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            skip_tag, in_union = in_union, False
            continue
        text = str(item)
        if skip_tag:   # the discriminator value right after a tagged-union index
            skip_tag = False
            continue
        if "tagged-union" in text:
            in_union = True
            continue
        if _is_branch(text) or (text == "body" and not parts):
            continue
        parts.append(("." if parts else "") + text)
    return "".join(parts) or None


def pydantic_error(errors: list[dict]) -> APIError:
    """One 400 from pydantic's errors: the deepest one (for a union, the
    branch that matched furthest); when every branch of a union failed on
    its type, the message lists the types expected."""
    deepest = max(errors, key=lambda e: len(e["loc"]))
    param = pydantic_param(tuple(deepest["loc"]))
    same = [e for e in errors if pydantic_param(tuple(e["loc"])) == param and len(e["loc"]) == len(deepest["loc"])]
    if len(same) > 1 and all(e["loc"] and _is_branch(str(e["loc"][-1])) for e in same):
        message = f"{param}: expected one of " + ", ".join(str(e["loc"][-1]) for e in same)
    else:
        message = f"{param}: {deepest['msg']}" if param else deepest["msg"]
    return invalid(message, param)


async def api_error_handler(_: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def unexpected_error_handler(_: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error while serving a request", exc_info=exc)
    return APIError("internal server error", status=500, type="server_error").response()
