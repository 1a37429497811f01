"""Sampling parameters: frozen, validated, and shared by scheduler and sampler.

The scheduler reads `max_tokens`, `min_tokens`, `ignore_eos` and
`stop_token_ids` to decide when a request ends; the runner's sampler reads
the rest.  Stop *strings* are matched by the engine after detokenisation.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TOKENS_LIMIT = 1 << 20
MAX_N = 128   # parallel samples of one prompt


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request's tokens (names and defaults as in vLLM).

    temperature 0 means greedy.  top_k 0 (or -1) disables top-k; top_p 1.0
    disables nucleus sampling.  seed makes a request's samples reproducible
    regardless of what else is in the batch.  n: completions of the prompt
    (parallel sampling; sequence i is seeded seed + i, see
    engine/parallel_sampling.py; beam search is not supported).  Raises
    ValueError naming the field on an invalid value.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    n: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or \
                not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise ValueError(f"max_tokens must be an integer in [1, {MAX_TOKENS_LIMIT}], got {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k!r}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens!r}")
        # torch generators take any 64-bit seed, signed or not
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not -2**63 <= self.seed < 2**64):
            raise ValueError(f"seed must be a 64-bit integer, got {self.seed!r}")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= MAX_N:
            raise ValueError(f"n must be an integer in [1, {MAX_N}], got {self.n!r}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
