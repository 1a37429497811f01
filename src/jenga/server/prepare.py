"""From an HTTP body to an engine request: parse, check, tokenise, render.

This is the CPU work of a request, so it runs on worker threads, never on
the event loop (`/health` and other clients' streams must not wait on a
large prompt); the tokenizer's batch encoder releases the GIL.  Cheap
checks come first so hostile input is refused before any expensive step:
the body limit (in app.py), then a character bound — a prompt longer than
`max_model_len x` the longest token's characters cannot fit, whatever it
encodes to — then tokenisation, then the context check.  Images are
refused before decoding when the model takes none.  Every refusal is an
`APIError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..sched.params import SamplingParams
from .chat import render_chat
from .errors import invalid
from .images import ImageLimits, LoadedImage
from .protocol import ChatCompletionRequest, CompletionRequest, TextPart, parse

# a tokenizer we cannot inspect (a test double) gets this many characters per token
FALLBACK_TOKEN_CHARS = 256


def max_token_chars(tokenizer: Any) -> int:
    """The most characters one token's vocabulary entry holds (byte-level
    BPE entries hold one character per byte, so this bounds what one
    token can cover in the input)."""
    backend = getattr(tokenizer, "backend", None)
    if backend is None or not hasattr(backend, "get_vocab"):
        return FALLBACK_TOKEN_CHARS
    return max(1, max((len(t) for t in backend.get_vocab(with_added_tokens=True)), default=1))


@dataclass(frozen=True)
class Prepared:
    """A checked request, ready for the engine.

    prompt_param: the field a prompt-length refusal names ("prompt" or
    "messages").  size_param: the field a "does not fit" refusal names:
    max_tokens when the client chose it, else the prompt's field.
    """

    token_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    prompt_param: str
    size_param: str
    images: tuple[LoadedImage, ...] = ()


class RequestPreparer:
    """Facts about the served model and the checks that use them (see
    module doc).  Thread-safe: it only reads its fields."""

    def __init__(self, *, tokenizer: Any, served_model_name: str, max_model_len: int, vocab_size: int,
                 image_limits: ImageLimits, accepts_images: bool) -> None:
        self.tokenizer, self.served_model_name = tokenizer, served_model_name
        self.max_model_len, self.vocab_size = max_model_len, vocab_size
        self.image_limits, self.accepts_images = image_limits, accepts_images
        self.max_prompt_chars = max_model_len * max_token_chars(tokenizer)

    # ------------------------------------------------------------ requests
    def completion(self, body: bytes) -> Prepared:
        """POST /v1/completions.  Raises APIError."""
        req = parse(CompletionRequest, body)
        self._check_model(req.model)
        req.check(self.max_model_len)
        ids = self._prompt_ids(req.single_prompt())
        return self._prepared(req, ids, "prompt", "max_tokens" in req.model_fields_set)

    def chat(self, body: bytes) -> Prepared:
        """POST /v1/chat/completions.  Raises APIError."""
        req = parse(ChatCompletionRequest, body)
        self._check_model(req.model)
        sent = req.max_tokens is not None or req.max_completion_tokens is not None
        req.check(self.max_model_len)
        chars = sum(len(m.content) if isinstance(m.content, str) else
                    sum(len(p.text) for p in m.content if isinstance(p, TextPart)) if m.content else 0
                    for m in req.messages)
        self._check_chars(chars, "messages")
        prompt = render_chat(req, self.tokenizer, self.image_limits, self.accepts_images)
        return self._prepared(req, prompt.token_ids, "messages", sent, prompt.images)

    def _prepared(self, req: Any, ids: list[int], prompt_param: str, max_tokens_sent: bool,
                  images: tuple[LoadedImage, ...] = ()) -> Prepared:
        params = req.sampling_params(self._max_tokens(req.max_tokens, len(ids), prompt_param))
        return Prepared(ids, params, req.stream, req.include_usage, prompt_param,
                        "max_tokens" if max_tokens_sent else prompt_param, images)

    # -------------------------------------------------------------- checks
    def _check_model(self, name: str) -> None:
        if name != self.served_model_name:
            raise invalid(f"The model `{name}` does not exist; this server serves "
                          f"`{self.served_model_name}`", "model")

    def _check_chars(self, chars: int, param: str) -> None:
        if chars > self.max_prompt_chars:
            raise invalid(f"This model's maximum context length is {self.max_model_len} tokens; a prompt of "
                          f"{chars} characters cannot fit (at most {self.max_prompt_chars} can)", param)

    def _max_tokens(self, requested: int | None, prompt_len: int, prompt_param: str) -> int:
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

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            self._check_chars(len(prompt), "prompt")
            ids = self.tokenizer.encode(prompt)
            if not ids:
                raise invalid("prompt encodes to no tokens", "prompt")
            return ids
        if len(prompt) >= self.max_model_len:
            raise invalid(f"This model's maximum context length is {self.max_model_len} tokens, but the "
                          f"prompt has {len(prompt)} tokens (at least one output token must fit)", "prompt")
        if any(not 0 <= t < self.vocab_size for t in prompt):
            raise invalid(f"prompt token ids must lie in [0, {self.vocab_size})", "prompt")
        return list(prompt)
