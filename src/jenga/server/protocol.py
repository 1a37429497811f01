"""Request and response models of the OpenAI-compatible API (pydantic).

Requests are parsed here and turned into the engine's `SamplingParams`;
every rejection is an `APIError` naming the field (`param`).  Types are
strict (`temperature: true`, `stream: "yes"` are refused).  Every field is
honoured or refused: fields SamplingParams carries pass through to it,
fields we do not implement (logprobs, tools, ...) are refused when set to
anything but their neutral value, unknown fields (typos) are refused.
Responses are pydantic models too, so the wire format lives in one file.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from ..sched.params import MAX_N, SamplingParams
from .errors import from_value_error, invalid, pydantic_error

MAX_STOP_STRINGS = 16
INT64 = (-(1 << 63), (1 << 63) - 1)   # what the samplers' generators take
Int = Annotated[int, Strict()]       # no true -> 1, no 2.5 -> error far from the field
Float = Annotated[float, Strict()]   # ints are fine, true and "1" are not
Bool = Annotated[bool, Strict()]     # no "yes" -> True

# OpenAI / vLLM fields that SamplingParams carries under the same name (vLLM's
# names), with their neutral value: sent, they are passed through and
# validated there; if this engine's SamplingParams lacks one, a request that
# sets it to anything but the neutral value is refused (never ignored).
PASSED_TO_SAMPLING = (("min_p", 0.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0),
                      ("repetition_penalty", 1.0), ("logit_bias", None), ("include_stop_str_in_output", False),
                      ("skip_special_tokens", True))
# Fields this server does not implement, with the values that mean "off";
# any other value is refused with 400 naming the field.  Unknown fields
# (typos such as `max_token`) are refused too.
NEUTRAL: dict[str, tuple] = {
    "logprobs": (False, None), "top_logprobs": (0, None), "echo": (False,), "best_of": (1, None),
    "suffix": ("", None), "tools": ([], None), "tool_choice": ("none", None), "functions": ([], None),
    "function_call": ("none", None), "parallel_tool_calls": (True, False, None),
    "response_format": ({"type": "text"}, None), "store": (False, None), "metadata": ({}, None),
    "service_tier": ("auto", "default", None), "modalities": (["text"], None), "prediction": (None,),
    "audio": (None,), "reasoning_effort": (None,), "web_search_options": (None,),
    "prompt_logprobs": (None,), "spaces_between_special_tokens": (True,),
    "add_generation_prompt": (True,), "continue_final_message": (False,), "chat_template_kwargs": ({}, None),
}
_SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))


def _is_neutral(value: Any, neutral: tuple) -> bool:
    # == would call True equal to 1 and 0.0 equal to False: compare types too
    return any(type(value) is type(n) and value == n or (isinstance(n, float) and type(value) is int
                                                          and value == n) for n in neutral)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: Bool = False


class _Common(BaseModel):
    """Sampling fields shared by completions and chat (vLLM extras:
    top_k, min_tokens, ignore_eos, stop_token_ids)."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: Int | None = None
    temperature: Float = 1.0
    top_p: Float = 1.0
    top_k: Int = 0
    seed: Int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Int] | None = None
    min_tokens: Int = 0
    ignore_eos: Bool = False
    n: Int = 1
    stream: Bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """OpenAI clients may send `null` for any optional field."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    def check(self, max_model_len: int) -> None:
        """Refuse values the engine must never see; raises APIError."""
        self._check_extra_fields()
        if not 1 <= self.n <= MAX_N:
            raise invalid(f"n must be in [1, {MAX_N}] (got {self.n}); beam search and best_of are not "
                          "supported", "n")
        if self.max_tokens is not None and not 1 <= self.max_tokens <= max_model_len:
            raise invalid(f"max_tokens must be in [1, {max_model_len}] (the model's context), "
                          f"got {self.max_tokens}", "max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise invalid(f"temperature must be in [0, 2], got {self.temperature}", "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise invalid(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options is only allowed when stream is true", "stream_options")
        if len(self.stop_strings) > MAX_STOP_STRINGS:
            raise invalid(f"stop may hold at most {MAX_STOP_STRINGS} strings", "stop")
        if any(not s for s in self.stop_strings):
            raise invalid("stop strings must be non-empty", "stop")
        if self.seed is not None and not INT64[0] <= self.seed <= INT64[1]:
            raise invalid(f"seed must be a 64-bit integer, got {self.seed}", "seed")
        if not -1 <= self.top_k <= INT64[1]:
            raise invalid(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k}", "top_k")
        if any(not 0 <= t <= INT64[1] for t in self.stop_token_ids or ()):
            raise invalid("stop_token_ids must be non-negative token ids", "stop_token_ids")
        if self.min_tokens < 0:
            raise invalid(f"min_tokens must be >= 0, got {self.min_tokens}", "min_tokens")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise invalid(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})",
                          "min_tokens")

    def _check_extra_fields(self) -> None:
        """Fields outside the model: passed to SamplingParams, neutral, or refused."""
        passed = dict(PASSED_TO_SAMPLING)
        for name, value in (self.model_extra or {}).items():
            if name in passed and name in _SAMPLING_FIELDS:
                continue
            neutral = (passed[name],) if name in passed else NEUTRAL.get(name)
            if neutral is None:
                raise invalid(f"unknown field `{name}`", name)
            if not _is_neutral(value, neutral):
                raise invalid(f"{name} is not supported by this server (only {neutral[0]!r} is accepted)", name)

    def sampling_extras(self) -> dict[str, Any]:
        """The PASSED_TO_SAMPLING fields this request sets (SamplingParams validates them)."""
        extra = self.model_extra or {}
        return {name: extra[name] for name, _ in PASSED_TO_SAMPLING if name in extra and name in _SAMPLING_FIELDS}

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        """The engine's parameters, `max_tokens` already resolved against
        the prompt.  Raises APIError naming the field."""
        if self.min_tokens > max_tokens:
            raise invalid(f"min_tokens ({self.min_tokens}) is more than the {max_tokens} output tokens that fit "
                          "the context after the prompt", "min_tokens")
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  top_k=self.top_k, seed=self.seed, stop=self.stop_strings, n=self.n,
                                  stop_token_ids=tuple(self.stop_token_ids or ()),
                                  min_tokens=self.min_tokens, ignore_eos=self.ignore_eos,
                                  **self.sampling_extras())
        except ValueError as e:
            raise from_value_error(e, None) from None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """POST /v1/completions.  `prompt`: text, token ids, or a list of one
    of them (batches of several prompts are refused; n > 1 samples the one
    prompt n times, engine/parallel_sampling.py)."""

    prompt: str | list[Int] | list[str] | list[list[Int]]
    max_tokens: Int | None = 16

    def single_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise invalid(f"prompt must hold one prompt, got {len(p)} (send one request each)", "prompt")
            p = p[0]
        if not p:
            raise invalid("prompt must not be empty", "prompt")
        return p


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[Union[TextPart, ImagePart], Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Common):
    """POST /v1/chat/completions (`max_completion_tokens` is the newer
    name of max_tokens; giving both is refused)."""

    messages: list[ChatMessage]
    max_completion_tokens: Int | None = None

    def check(self, max_model_len: int) -> None:
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None:
                raise invalid("give max_tokens or max_completion_tokens, not both", "max_completion_tokens")
            self.max_tokens = self.max_completion_tokens
        super().check(max_model_len)
        if not self.messages:
            raise invalid("messages must hold at least one message", "messages")
        for i, m in enumerate(self.messages):
            if m.role != "user" and isinstance(m.content, list) and \
                    any(isinstance(p, ImagePart) for p in m.content):
                raise invalid(f"images are only allowed in user messages, not {m.role}", f"messages[{i}].content")


def parse(model: type[BaseModel], raw: bytes) -> Any:
    """Parse a JSON body into `model`; malformed JSON or a wrong field
    becomes a 400 naming the field."""
    if not raw.strip():
        raise invalid("request body is empty; expected a JSON object", None)
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        if errors[0]["type"] in ("json_invalid", "json_type"):
            raise invalid(f"request body is not valid JSON: {errors[0]['msg']}", None) from None
        if errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise invalid("request body must be a JSON object", None) from None
        raise pydantic_error(errors) from None


# ---------------------------------------------------------------- responses
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatStreamChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "jenga"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
