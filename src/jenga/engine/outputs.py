"""What the engine hands back: per-request outputs, in vLLM's shape.

`LLMEngine.step()` returns one `RequestOutput` per request that changed in
the step: the cumulative text and token ids so far (`outputs[0]`), and
`delta`, only what the step added, which is what a streaming server sends.
With `n > 1` (engine/parallel_sampling.py) `outputs` holds all n
completions and each output's delta belongs to one of them (`delta.index`).
All of it is frozen; finish reasons are the strings of sched's FinishReason
("stop", "length", "abort", "error").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sched.step import TokenLogprobs


@dataclass(frozen=True)
class Logprob:
    """One token's log-probability as vLLM reports it: rank 1 is the most
    likely token; decoded_token is the token's own text."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# per generated token: {token id: Logprob}, the sampled token first, then the top ones
SampleLogprobs = tuple[dict[int, Logprob], ...]


def logprob_dict(lp: TokenLogprobs, decode) -> dict[int, Logprob]:
    """vLLM's per-token dict from the sampler's TokenLogprobs; `decode`
    turns one token id into its text."""
    out = {lp.token_id: Logprob(lp.logprob, lp.rank, decode(lp.token_id))}
    for rank, (tok, value) in enumerate(lp.top, start=1):
        if tok not in out:
            out[tok] = Logprob(value, rank, decode(tok))
    return out


@dataclass(frozen=True)
class CompletionOutput:
    """One completion.  finish_reason is None while running; stop_reason is
    the stop string or stop token id that ended it, else None.  logprobs
    (one dict per token id) and cumulative_logprob are set when the
    request's SamplingParams.logprobs is not None."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    index: int = 0
    logprobs: SampleLogprobs | None = None
    cumulative_logprob: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class RequestMetrics:
    """Wall-clock times (time.monotonic seconds) of a request's life:
    arrival, first scheduled (its first step began), first token, finish."""

    arrival_time: float
    first_token_time: float | None = None
    finish_time: float | None = None
    first_scheduled_time: float | None = None

    @property
    def ttft(self) -> float | None:
        """Time to first token, None before it."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def queue_time(self) -> float | None:
        """Arrival to the first step that computed it (vLLM's queue time)."""
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time

    @property
    def prefill_time(self) -> float | None:
        """First scheduled to first token."""
        if self.first_scheduled_time is None or self.first_token_time is None:
            return None
        return self.first_token_time - self.first_scheduled_time

    @property
    def decode_time(self) -> float | None:
        """First token to finish."""
        if self.first_token_time is None or self.finish_time is None:
            return None
        return self.finish_time - self.first_token_time


@dataclass(frozen=True)
class DeltaOutput:
    """What one step added to a request: the newly streamable text, the new
    token ids, and whether it finished (then with why).  index: which of
    the request's n completions it belongs to (parallel sampling)."""

    text: str
    token_ids: tuple[int, ...]
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    index: int = 0
    logprobs: SampleLogprobs | None = None


@dataclass(frozen=True)
class RequestOutput:
    """A request's state after a step (or at the end for LLM.generate).

    num_cached_tokens: prompt tokens served from the prefix cache.
    prompt_logprobs: always None for now (SamplingParams refuses them).
    """

    request_id: str
    prompt: str | None
    prompt_token_ids: tuple[int, ...]
    outputs: tuple[CompletionOutput, ...]
    finished: bool
    num_cached_tokens: int
    metrics: RequestMetrics
    delta: DeltaOutput | None = None
    prompt_logprobs: None = None
