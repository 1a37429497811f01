"""Scheduler configuration (frozen, validated; the CLI is built from it).

It is the one home of the scheduler's knobs: `EngineConfig` derives from
it (engine/config.py), so each knob has one default, one validation and
one help text, whether the simulator or the real engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerConfig:
    """Knobs of the continuous-batching scheduler (names as in vLLM).

    max_num_batched_tokens: token budget of one step (prompt chunks plus
        decodes).
    max_num_seqs: most requests running at once.
    enable_chunked_prefill: split long prompts over several steps; when off, a
        prompt is prefilled whole (and must fit the token budget).
    enable_prefix_caching: look up cached prefixes at admission.
    mamba_checkpoint_interval: tokens between cached recurrent-state
        checkpoints (states are also saved at prompt ends and branch points);
        None = auto: about one checkpoint per the tokens whose attention K/V
        costs as much as a state, at least 512
        (memory/checkpoint_interval.py).
    max_waiting: most requests queued; add_request raises QueueFull beyond
        (the server answers 503 with Retry-After).
    num_speculative_tokens: draft tokens verified per decode step (0: off);
        the runner's draft model proposes them (StepResult.draft_tokens).
    mixed_batches: a step may mix new prefills with running decodes (vLLM
        v1); False gives vLLM v0's steps of new prefills only, whenever one
        can be admitted, else decodes only.
    shared_prefill_wait: with prefix caching, a waiting request waits for
        the prefill of a request that shares at least this many more prompt
        tokens with it than it already hits, then hits them (0: off;
        sched/prefill_wait.py).
    Raises ValueError naming the field on a bad value.
    """

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    # cli_type: the option type for a CLI built from the fields (a None default cannot tell it)
    mamba_checkpoint_interval: int | None = field(default=None, metadata={"cli_type": int, "cli_default": "auto"})
    max_waiting: int = 100_000
    num_speculative_tokens: int = 0
    mixed_batches: bool = True
    shared_prefill_wait: int = 32

    def __post_init__(self) -> None:
        for name in ("max_num_batched_tokens", "max_num_seqs", "max_waiting"):
            v = getattr(self, name)
            if not _int(v) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.mamba_checkpoint_interval
        if v is not None and (not _int(v) or v <= 0):
            raise ValueError(f"mamba_checkpoint_interval must be a positive integer or None (auto), got {v!r}")
        if not _int(self.shared_prefill_wait) or self.shared_prefill_wait < 0:
            raise ValueError(f"shared_prefill_wait must be an integer >= 0, got {self.shared_prefill_wait!r}")
        if not _int(self.num_speculative_tokens) or not 0 <= self.num_speculative_tokens <= 16:
            raise ValueError(f"num_speculative_tokens must be an integer in [0, 16], got {self.num_speculative_tokens!r}")
        for name in ("enable_chunked_prefill", "enable_prefix_caching", "mixed_batches"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
