"""Scheduler counters, read by metrics, the simulator and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..memory.types import PrefixHit


@dataclass
class SchedulerStats:
    """Live counters (mutated by the scheduler only).

    prompt_tokens / hit_tokens count each request once, at first admission;
    hit_tokens_per_group is the hit each group alone would have given.
    waiting_for_memory: the last schedule() left a request waiting because
    the memory manager could not make room.
    num_pages_moved: small pages the manager's compaction moved (each a
    page copy run before a step's forward) to free a large page.
    """

    num_groups: int = 0
    num_running: int = 0
    num_waiting: int = 0
    num_preemptions: int = 0
    num_pages_moved: int = 0
    num_finished: int = 0
    prompt_tokens: int = 0
    hit_tokens: int = 0
    hit_tokens_per_group: list[int] = field(default_factory=list)
    waiting_for_memory: bool = False
    draft_tokens: int = 0
    accepted_tokens: int = 0

    def __post_init__(self) -> None:
        self.hit_tokens_per_group = [0] * self.num_groups

    def record_admission(self, prompt_len: int, hit: PrefixHit | None) -> None:
        self.prompt_tokens += prompt_len
        if hit is not None:
            self.hit_tokens += hit.num_tokens
            for g, n in enumerate(hit.per_group):
                self.hit_tokens_per_group[g] += n

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
