"""Scheduler configuration (frozen, validated; the CLI is built from it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerConfig:
    """Knobs of the continuous-batching scheduler (names as in vLLM).

    max_num_batched_tokens: token budget of one step.
    max_num_seqs: most requests running at once.
    enable_chunked_prefill: split long prompts over several steps; when off, a
        prompt is prefilled whole (and must fit the token budget).
    enable_prefix_caching: look up cached prefixes at admission.
    mamba_checkpoint_interval: tokens between cached recurrent-state
        checkpoints (states are also saved at prompt ends and branch points);
        None = auto: about one checkpoint per the tokens whose attention K/V
        costs as much as a state, at least 512
        (memory/checkpoint_interval.py).
    max_waiting: most requests queued; add_request raises QueueFull beyond.
    mixed_batches: a step may mix new prefills with running decodes (vLLM
        v1); False gives vLLM v0's steps of new prefills only, whenever one
        can be admitted, else decodes only.
    num_speculative_tokens: draft tokens verified per decode step (0: off);
        the runner's draft model proposes them (StepResult.draft_tokens).
    shared_prefill_wait: with prefix caching, a waiting request waits for
        the prefill of a request that shares at least this many more prompt
        tokens with it than it already hits, then hits them (0: off;
        sched/prefill_wait.py).
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
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        v = self.mamba_checkpoint_interval
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ValueError(f"mamba_checkpoint_interval must be a positive integer or None (auto), got {v!r}")
        if not isinstance(self.shared_prefill_wait, int) or self.shared_prefill_wait < 0:
            raise ValueError(f"shared_prefill_wait must be an integer >= 0, got {self.shared_prefill_wait!r}")
        if not isinstance(self.num_speculative_tokens, int) or not 0 <= self.num_speculative_tokens <= 16:
            raise ValueError(f"num_speculative_tokens must be in [0, 16], got {self.num_speculative_tokens!r}")
