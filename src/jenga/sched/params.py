"""Sampling parameters: frozen, validated, and shared by scheduler and sampler.

The scheduler reads `max_tokens`, `min_tokens`, `ignore_eos` and
`stop_token_ids` to decide when a request ends; the runner's sampler reads
the rest (temperature, top-k/top-p/min-p, penalties, logit_bias, logprobs);
the engine's detokeniser reads `skip_special_tokens`.  Stop *strings* are
matched by the engine after detokenisation.  Names, defaults and ranges are
vLLM's, so a vLLM user's SamplingParams(...) call works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MAX_TOKENS_LIMIT = 1 << 20
MAX_N = 128   # parallel samples of one prompt
# below this a temperature samples greedily (vLLM's _SAMPLING_EPS): dividing
# logits by it would overflow float32 and turn probabilities into NaN
GREEDY_TEMPERATURE = 1e-5
MAX_LOGPROBS = 20          # top log-probabilities per token a request may ask for
LOGIT_BIAS_LIMIT = 100.0   # OpenAI's and vLLM's bound on one bias


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request's tokens (names and defaults as in vLLM).

    n: completions of the prompt, 1..MAX_N (parallel sampling; sequence i
        is seeded seed + i, see engine/parallel_sampling.py).
    best_of: None or n (keeping the best of more than n is not supported).
    temperature: below 1e-5 (0 included) means greedy, as in vLLM.
    top_p: nucleus mass in (0, 1]; 1.0 disables it.
    top_k: keep the k most likely tokens; 0 or -1 disables it.
    min_p: drop tokens whose probability is below min_p times the most
        likely token's, in [0, 1]; 0 disables it.
    presence_penalty / frequency_penalty: in [-2, 2], subtracted from the
        logit of every token already generated (once / once per occurrence).
    repetition_penalty: > 0; tokens of the prompt or the output have a
        positive logit divided by it and a negative one multiplied (1: off).
    logit_bias: {token id: bias in [-100, 100]} added to the logits.
    seed: makes a request's samples reproducible regardless of what else
        is in the batch.
    logprobs: None, or how many top log-probabilities (0..20) to return
        per generated token; the sampled token's is always included.
    prompt_logprobs: accepted as None only for now (prompt positions are
        not computed as logits); any other value is a ValueError.
    skip_special_tokens: leave special tokens out of the text.
    Raises ValueError naming the field on an invalid value.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: Mapping[int, float] | None = field(default=None, hash=False)
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True
    n: int = 1
    best_of: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if not _int(self.max_tokens) or not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise ValueError(f"max_tokens must be an integer in [1, {MAX_TOKENS_LIMIT}], got {self.max_tokens!r}")
        _check_range("temperature", self.temperature, 0.0, 100.0)
        if not _real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _int(self.top_k) or self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k!r}")
        _check_range("min_p", self.min_p, 0.0, 1.0)
        _check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)
        _check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        if not _real(self.repetition_penalty) or not 0.0 < self.repetition_penalty <= 100.0:
            raise ValueError(f"repetition_penalty must be in (0, 100], got {self.repetition_penalty!r}")
        if not _int(self.min_tokens) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens!r}")
        # torch generators take any 64-bit seed, signed or not
        if self.seed is not None and (not _int(self.seed) or not -2**63 <= self.seed < 2**64):
            raise ValueError(f"seed must be a 64-bit integer, got {self.seed!r}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        self._check_bias()
        self._check_counts()

    def _check_bias(self) -> None:
        if self.logit_bias is None:
            return
        if not isinstance(self.logit_bias, Mapping):
            raise ValueError(f"logit_bias must be a mapping of token id to bias, got {type(self.logit_bias).__name__}")
        bias = {}
        for tok, b in self.logit_bias.items():
            # JSON object keys are strings: "50256" is token 50256
            tid = int(tok) if isinstance(tok, str) and tok.strip().isdigit() else tok
            if not _int(tid) or tid < 0:
                raise ValueError(f"logit_bias keys must be token ids >= 0, got {tok!r}")
            _check_range(f"logit_bias[{tid}]", b, -LOGIT_BIAS_LIMIT, LOGIT_BIAS_LIMIT)
            bias[tid] = float(b)
        object.__setattr__(self, "logit_bias", MappingProxyType(bias) if bias else None)

    def _check_counts(self) -> None:
        if self.logprobs is not None and (not _int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise ValueError(f"logprobs must be None or an integer in [0, {MAX_LOGPROBS}], got {self.logprobs!r}")
        if self.prompt_logprobs is not None:
            raise ValueError("prompt_logprobs is not supported yet (prompt positions are not sampled); "
                             "leave it None")
        if not _int(self.n) or not 1 <= self.n <= MAX_N:
            raise ValueError(f"n must be an integer in [1, {MAX_N}], got {self.n!r}")
        if self.best_of is not None and (not _int(self.best_of) or self.best_of != self.n):
            raise ValueError(f"best_of must be None or equal to n ({self.n}); keeping the best of more is "
                             f"not supported, got {self.best_of!r}")
        if not isinstance(self.skip_special_tokens, bool):
            raise ValueError(f"skip_special_tokens must be a bool, got {self.skip_special_tokens!r}")

    @property
    def greedy(self) -> bool:
        """Argmax sampling: temperature below GREEDY_TEMPERATURE."""
        return self.temperature < GREEDY_TEMPERATURE

    @property
    def has_penalties(self) -> bool:
        """Whether sampling depends on the tokens seen so far."""
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: object) -> bool:
    """A finite real number (bools and NaN are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _check_range(name: str, v: object, lo: float, hi: float) -> None:
    if not _real(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
