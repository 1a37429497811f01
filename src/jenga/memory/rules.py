"""AllocatorRules: how each allocator flavour places and evicts pages.

The plan says *which* allocator runs (`jenga` or a paper baseline); these
rules are the only place the manager and pool read that choice, so a
baseline is a set of switches on the same code, not a separate script.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import MemoryPlan


@dataclass(frozen=True)
class AllocatorRules:
    """Switches that distinguish the allocators.

    request_aware: a large page belongs to the request that opened it and
        that request fills it first (Jenga); otherwise any free slot is used
        first, as a single-size block pool would.
    aligned: evictable pages tie-break on token position (later tokens
        first, same token same priority in every group); otherwise on the
        order pages were released, group by group (vLLM's free queue).
    partitioned: each group may hold at most its static share of large pages.
    compaction: when nothing else frees room, empty another group's large
        page by moving its small pages into that group's free slots
        elsewhere (memory/compact.py).
    mamba_checkpoints: "jenga" (every interval, prompt ends, branch points),
        "block" (only at the token groups' page boundaries, as vLLM v1),
        "none" (no recurrent-state caching, as vLLM v0).
    """

    request_aware: bool = True
    aligned: bool = True
    partitioned: bool = False
    mamba_checkpoints: str = "jenga"
    compaction: bool = False

    @classmethod
    def for_plan(cls, plan: MemoryPlan) -> "AllocatorRules":
        if plan.allocator == "jenga":
            return cls(compaction=True)
        if plan.allocator == "static":
            return cls(partitioned=True)
        if plan.allocator == "uniform":
            return cls(request_aware=False, aligned=False, mamba_checkpoints="block")
        return cls(request_aware=False, aligned=False, mamba_checkpoints="none")  # max-page
