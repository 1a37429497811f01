"""Engine outputs to OpenAI responses: whole bodies and SSE streams.

The engine's `RequestOutput` carries the request's text and token ids so
far; each SSE chunk sends the text added since the previous one.  Streams
end with `data: [DONE]`; when `stream_options.include_usage` is set, every
chunk has `"usage": null` and one last chunk with no choices carries it.
An engine error (a failed step, a shutdown past the drain timeout) ends a
stream with an `{"error": ...}` event, then [DONE].
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from .async_engine import EngineDead, RequestFailed, RequestStream
from .errors import APIError, engine_error
from .protocol import (AssistantMessage, ChatChoice, ChatCompletionResponse, CompletionChoice,
                       CompletionResponse, Usage)

_ENGINE_ERROR = "the engine could not run this request (it does not fit in the KV pool)"


class SSEResponse(StreamingResponse):
    """An event stream that always closes its RequestStream, however the
    response ends: finished, client disconnected, or never started."""

    def __init__(self, content: AsyncIterator[str], stream: RequestStream) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._request_stream = stream

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._request_stream.close()


def _reason(choice: Any) -> str | None:
    reason = choice.finish_reason
    return None if reason is None else str(getattr(reason, "value", reason))


def finish_reason(out: Any) -> str | None:
    """The first completion's finish reason (the request's, when n == 1)."""
    return _reason(out.outputs[0])


def usage_of(out: Any) -> Usage:
    """Prompt tokens once, completion tokens summed over the n completions."""
    return Usage.of(len(out.prompt_token_ids), sum(len(c.token_ids) for c in out.outputs))


def _checked(out: Any) -> Any:
    if any(_reason(c) == "error" for c in out.outputs):
        raise APIError(_ENGINE_ERROR, status=500, type="server_error")
    return out


def completion_response(request_id: str, model: str, out: Any) -> CompletionResponse:
    out = _checked(out)
    choices = [CompletionChoice(index=c.index, text=c.text, finish_reason=_reason(c)) for c in out.outputs]
    return CompletionResponse(id=request_id, model=model, choices=choices, usage=usage_of(out))


def chat_response(request_id: str, model: str, out: Any) -> ChatCompletionResponse:
    out = _checked(out)
    choices = [ChatChoice(index=c.index, message=AssistantMessage(content=c.text), finish_reason=_reason(c))
               for c in out.outputs]
    return ChatCompletionResponse(id=request_id, model=model, choices=choices, usage=usage_of(out))


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _events(stream: RequestStream, model: str, include_usage: bool, chat: bool,
                  n: int = 1) -> AsyncIterator[str]:
    base = {"id": stream.request_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model}
    if include_usage:
        base["usage"] = None

    def chunk(index: int, text: str | None, reason: str | None, first: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": ""} if first else ({} if text is None else {"content": text})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        return _event({**base, "choices": [choice]})

    # per completion (n > 1: one per index): text sent so far, whether it ended
    sent: dict[int, int] = {}
    done: set[int] = set()
    last = None
    try:
        if chat:   # the role first, for every completion, before any token (as OpenAI and vLLM do)
            for i in range(n):
                yield chunk(i, None, None, first=True)
        async for out in stream:
            last = out
            for c in out.outputs:
                i, reason = c.index, _reason(c)
                if reason == "error":
                    raise APIError(_ENGINE_ERROR, status=500, type="server_error")
                at = sent.setdefault(i, 0)
                if len(c.text) > at:
                    yield chunk(i, c.text[at:], None)
                    sent[i] = len(c.text)
                if reason is not None and i not in done:
                    done.add(i)
                    yield chunk(i, None, reason)
        if include_usage and last is not None:
            yield _event({**base, "choices": [], "usage": usage_of(last).model_dump()})
    except APIError as e:
        yield _event(e.body())
    except (EngineDead, RequestFailed) as e:
        yield _event(engine_error(e).body())
    yield "data: [DONE]\n\n"


def completion_sse(stream: RequestStream, model: str, include_usage: bool) -> AsyncIterator[str]:
    return _events(stream, model, include_usage, chat=False)


def chat_sse(stream: RequestStream, model: str, include_usage: bool, n: int = 1) -> AsyncIterator[str]:
    return _events(stream, model, include_usage, chat=True, n=n)
