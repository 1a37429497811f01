"""The periodic stats line a vLLM user reads while the engine is busy.

`StatsLogger` is a step observer (`LLMEngine.add_step_observer`): it adds
up each step's prompt tokens computed and tokens generated, and every
`interval_s` seconds in which the engine did something it logs one line
like vLLM's "Avg prompt throughput ... Running ... GPU KV cache usage ...",
plus what Jenga adds: KV use per group, and preemptions since the last
line.  The server subscribes one (off with `--disable-log-stats`); offline
`LLM` runs do not.  Nothing is logged while idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..sched.executor import StepEvent

log = logging.getLogger("jenga.stats")


class StatsLogger:
    """See module doc.  `engine`: what is read at log time (its scheduler
    and manager); `clock`: seconds, monotonic (tests pass a fake one);
    `emit`: where a line goes (the `jenga.stats` logger at INFO)."""

    def __init__(self, engine: Any, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] | None = None) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.engine, self.interval_s, self.clock = engine, interval_s, clock
        self.emit = emit or (lambda line: log.info("%s", line))
        self._since = clock()
        self._prompt = self._generated = self._steps = 0
        self._preemptions = engine.scheduler.stats.num_preemptions

    def __call__(self, event: StepEvent) -> None:
        plan = event.plan
        if plan.seqs:
            self._steps += 1
            self._prompt += sum(min(s.end, s.prompt_len) - s.start for s in plan.seqs if s.start < s.prompt_len)
            self._generated += sum(len(t) for t in event.result.sampled.values())
        now = self.clock()
        if now - self._since >= self.interval_s:
            if self._steps:
                self.emit(self.line(now - self._since))
            self._since, self._prompt, self._generated, self._steps = now, 0, 0, 0
            self._preemptions = self.engine.scheduler.stats.num_preemptions

    def line(self, elapsed: float) -> str:
        """The stats line for the `elapsed` seconds since the last one."""
        sched = self.engine.scheduler
        usage = sched.manager.usage()
        stats = sched.stats
        held = usage.used_bytes / usage.pool_bytes if usage.pool_bytes else 0.0
        per_group = ", ".join(f"{g.label} {100 * g.used_bytes / usage.pool_bytes:.1f}%" for g in usage.per_group)
        hit = stats.hit_tokens / stats.prompt_tokens if stats.prompt_tokens else 0.0
        return (f"Avg prompt throughput: {self._prompt / elapsed:.1f} tokens/s, "
                f"Avg generation throughput: {self._generated / elapsed:.1f} tokens/s, "
                f"Running: {len(sched.running)} reqs, Waiting: {len(sched.waiting)} reqs, "
                f"KV cache usage: {100 * held:.1f}% ({per_group}), "
                f"Prefix cache hit rate: {100 * hit:.1f}%, "
                f"Preemptions: {stats.num_preemptions - self._preemptions}")
