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
from ..sched.step import TokenLogprobs
from .outputs import CompletionOutput, DeltaOutput, Logprob, RequestMetrics, RequestOutput, logprob_dict
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
    tokenizer: Tokenizer | None       # None: skip_tokenizer_init, token ids only, empty text
    arrival_time: float
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    first_token_time: float | None = None
    first_scheduled_time: float | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_cached_tokens: int = 0
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float = 0.0

    def __post_init__(self) -> None:
        self.detok = None if self.tokenizer is None else \
            IncrementalDetokenizer(self.tokenizer, self.params.skip_special_tokens)
        if self.params.logprobs is not None:
            self.logprobs = []
        self.stops = StopStrings(self.params.stop, self.params.include_stop_str_in_output)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def apply(self, new_token_ids: tuple[int, ...], finish: FinishReason | None, now: float,
              num_cached_tokens: int = 0, logprobs: tuple[TokenLogprobs, ...] = ()) -> StepUpdate:
        """Fold one step in.  `finish` is the scheduler's finish reason (None
        while running); a stop string found in the new text finishes the
        request with "stop" and truncates the text.  `logprobs` has one
        entry per new token when the params ask for them.  Mutates self."""
        self.num_cached_tokens = max(self.num_cached_tokens, num_cached_tokens)
        new_logprobs = self._add_logprobs(new_token_ids, logprobs)
        if new_token_ids and self.first_token_time is None:
            self.first_token_time = now
        self.token_ids.extend(new_token_ids)
        piece = self.detok.add(new_token_ids) if new_token_ids and self.detok is not None else ""
        if finish is not None and self.detok is not None:
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
                            self.finish_reason, self.stop_reason, new_logprobs)
        self.sent = end
        return StepUpdate(self._output(now, delta), None if finish is not None else stopped_by)

    def _add_logprobs(self, new_token_ids: tuple[int, ...], logprobs: tuple[TokenLogprobs, ...]):
        """Convert and keep the new tokens' logprobs; None when not asked.
        Raises ValueError when they do not match the new tokens."""
        if self.logprobs is None:
            return None
        if tuple(lp.token_id for lp in logprobs) != tuple(new_token_ids):
            raise ValueError(f"request {self.request_id!r}: logprobs for {len(logprobs)} tokens, "
                             f"{len(new_token_ids)} new tokens")
        decode = self._decode_one
        new = tuple(logprob_dict(lp, decode) for lp in logprobs)
        self.logprobs.extend(new)
        self.cumulative_logprob += sum(lp.logprob for lp in logprobs)
        return new

    def _decode_one(self, token_id: int) -> str | None:
        return None if self.tokenizer is None else self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _output(self, now: float, delta: DeltaOutput) -> RequestOutput:
        lps = None if self.logprobs is None else tuple(self.logprobs)
        completion = CompletionOutput(self.text[:self.sent], tuple(self.token_ids), self.finish_reason,
                                      self.stop_reason, logprobs=lps,
                                      cumulative_logprob=None if lps is None else self.cumulative_logprob)
        metrics = RequestMetrics(self.arrival_time, self.first_token_time, now if self.finished else None,
                                 self.first_scheduled_time)
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids, (completion,),
                             self.finished, self.num_cached_tokens, metrics, delta)

    def abort(self, now: float) -> RequestOutput:
        """Mark the request aborted and return its final output."""
        self.finish_reason = FinishReason.ABORT.value
        self.text = self.text[:self.sent]   # held-back text is never sent
        return self._output(now, DeltaOutput("", (), True, self.finish_reason))
