"""Requests: the unit of work the scheduler admits, runs, preempts and ends.

A `Request` is live, mutable scheduler state; it never crosses the step
boundary (runners see `SeqStep`s).  `all_token_ids` is prompt + output and
is shared by reference with the memory manager, which hashes it for the
prefix cache as blocks fill.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..memory.types import ImageRef
from .params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"


class FinishReason(str, enum.Enum):
    STOP = "stop"          # eos, stop token or stop string
    LENGTH = "length"      # max_tokens or the model's context
    ABORT = "abort"        # client went away / engine aborted it
    ERROR = "error"        # can never fit in memory, or similar


@dataclass(eq=False)
class Request:
    """A request as the scheduler tracks it.

    num_computed: tokens whose state is in the pool (prefix hits included).
    cache_salt: requests with different salts never share prefix cache.
    model: the model tag whose groups serve this request ("main").
    """

    req_id: str
    prompt_token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    images: tuple[ImageRef, ...] = ()
    arrival_time: float = 0.0
    cache_salt: str = ""
    eos_token_id: int | None = None
    status: Status = Status.WAITING
    num_computed: int = 0
    num_cached: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    all_token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    spec_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.prompt_token_ids:
            raise ValueError("prompt must contain at least one token")
        self.prompt_token_ids = list(self.prompt_token_ids)
        self.all_token_ids = list(self.prompt_token_ids) + list(self.output_token_ids)
        for img in self.images:
            if img.position >= len(self.prompt_token_ids):
                raise ValueError(f"image at position {img.position} lies outside the "
                                 f"{len(self.prompt_token_ids)}-token prompt")

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_encoder_tokens(self) -> int:
        return sum(img.num_tokens for img in self.images)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def append_output(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)
