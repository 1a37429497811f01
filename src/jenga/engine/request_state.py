"""The engine's per-request output state: tokens and text so far.

The scheduler owns a request's tokens and memory; this owns what the user
sees.  Each step `ReqOutputState.apply` takes the scheduler's update (new
tokens, finished or not), detokenises incrementally, looks for stop strings
and builds the frozen `RequestOutput` with its streaming delta.  Only text
that can no longer change is streamed: an incomplete UTF-8 character, or a
tail that could still grow into a stop string, waits for the next step, so
the deltas always add up to the cumulative text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sched.params import SamplingParams
from ..sched.request import FinishReason
from .outputs import CompletionOutput, DeltaOutput, RequestMetrics, RequestOutput
from .tokenizer import IncrementalDetokenizer, StopStrings, Tokenizer


@dataclass(frozen=True)
class StepUpdate:
    """What one step did to one request (the engine's view): `stopped_by`
    is set when a stop string ended it, and the engine must then finish it
    in the scheduler."""

    output: RequestOutput
    stopped_by: str | None = None


@dataclass
class ReqOutputState:
    """Mutable output state of one live request (see module doc)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    tokenizer: Tokenizer
    arrival_time: float
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    first_token_time: float | None = None
    first_scheduled_time: float | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_cached_tokens: int = 0

    def __post_init__(self) -> None:
        self.detok = IncrementalDetokenizer(self.tokenizer)
        self.stops = StopStrings(self.params.stop, self.params.include_stop_str_in_output)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def apply(self, new_token_ids: tuple[int, ...], finish: FinishReason | None, now: float,
              num_cached_tokens: int = 0) -> StepUpdate:
        """Fold one step in.  `finish` is the scheduler's finish reason (None
        while running); a stop string found in the new text finishes the
        request with "stop" and truncates the text.  Mutates self."""
        self.num_cached_tokens = max(self.num_cached_tokens, num_cached_tokens)
        if new_token_ids and self.first_token_time is None:
            self.first_token_time = now
        self.token_ids.extend(new_token_ids)
        piece = self.detok.add(new_token_ids) if new_token_ids else ""
        if finish is not None:
            piece += self.detok.finish()
        self.text += piece
        stopped_by = None
        hit = self.stops.find(self.text, len(piece))
        if hit is not None:
            self.text = self.text[:hit.text_len]
            stopped_by = hit.stop
            self.finish_reason, self.stop_reason = FinishReason.STOP.value, hit.stop
        elif finish is not None:
            self.finish_reason = finish.value
            if finish is FinishReason.STOP and self.token_ids and self.token_ids[-1] in self.params.stop_token_ids:
                self.stop_reason = self.token_ids[-1]
        end = len(self.text) if self.finished else max(self.sent, self.stops.stable_len(self.text))
        delta = DeltaOutput(self.text[self.sent:end], tuple(new_token_ids), self.finished,
                            self.finish_reason, self.stop_reason)
        self.sent = end
        return StepUpdate(self._output(now, delta), None if finish is not None else stopped_by)

    def _output(self, now: float, delta: DeltaOutput) -> RequestOutput:
        completion = CompletionOutput(self.text[:self.sent], tuple(self.token_ids), self.finish_reason,
                                      self.stop_reason)
        metrics = RequestMetrics(self.arrival_time, self.first_token_time, now if self.finished else None,
                                 self.first_scheduled_time)
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids, (completion,),
                             self.finished, self.num_cached_tokens, metrics, delta)

    def abort(self, now: float) -> RequestOutput:
        """Mark the request aborted and return its final output."""
        self.finish_reason = FinishReason.ABORT.value
        self.text = self.text[:self.sent]   # held-back text is never sent
        return self._output(now, DeltaOutput("", (), True, self.finish_reason))
