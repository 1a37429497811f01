"""Start-up sizing: how big the KV pool is, and the longest request it holds.

A context limit the pool cannot hold makes the default request fail: with
no max_tokens, a request may run to the end of the context, and the
scheduler refuses one that could not fit the pool even alone.  So, once the
pool is built, `fit_max_model_len` measures the longest request it holds
(per group, with the policies' own peak counts, a prefill chunk included)
and either keeps the context limit, lowers it and says so (when the user did
not choose it), or refuses to start with one message naming the flags and
the numbers (when the user's values conflict).  On CPU, where no device
memory bounds the pool, `default_cpu_pool_bytes` sizes it so that
CPU_FULL_CONTEXTS requests of the full context fit, within a fraction of
the memory available.  Pure Python, no torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from ..memory import capacity
from ..memory.manager import MemoryManager
from ..memory.plan import MemoryPlan

log = logging.getLogger("jenga.engine")

CPU_FULL_CONTEXTS = 2          # full-context requests the default CPU pool holds at once
CPU_MEMORY_FRACTION = 0.25     # of the memory available after loading the weights
MIN_CPU_POOL_BYTES = 256 * 2**20


@dataclass(frozen=True)
class PoolCapacity:
    """What one pool holds.  tokens_per_group: (group label, tokens the
    group could hold with the whole pool); longest_request: tokens (prompt +
    output) of the longest request that fits alone, prefill chunk included."""

    pool_bytes: int
    tokens_per_group: tuple[tuple[str, int], ...]
    longest_request: int

    def describe(self) -> str:
        groups = ", ".join(f"{label} {tokens} tokens" for label, tokens in self.tokens_per_group)
        return (f"KV pool {mib(self.pool_bytes)} holds {groups} (each group alone); the longest request "
                f"that fits is {self.longest_request} tokens")


def request_bytes(manager: MemoryManager, num_tokens: int, chunk: int) -> int:
    """Pool bytes a request of `num_tokens` tokens needs alone at its peak."""
    plan = manager.plan
    pages = capacity.large_pages_alone(manager.policies, plan, num_tokens, 0, min(chunk, num_tokens))
    return sum(pages) * plan.large_page_bytes


def pool_capacity(manager: MemoryManager, limit: int, chunk: int) -> PoolCapacity:
    """Measure `manager`'s pool; `longest_request` is searched up to `limit`
    tokens, each computed at most `chunk` tokens a step (fits_alone grows
    with the request, so a binary search finds it)."""
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if manager.fits_alone(mid, 0, min(chunk, mid)) else (lo, mid - 1)
    plan = manager.plan
    per_group = tuple((g.spec.describe(), plan.num_large_pages * g.per_large * g.page_tokens)
                      for g in plan.groups)
    return PoolCapacity(plan.pool_bytes, per_group, lo)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_cpu_pool_bytes(build: Callable[[int], MemoryPlan], context: int, chunk: int,
                           available: int | None) -> int:
    """The default CPU pool: room for CPU_FULL_CONTEXTS requests of
    `context` tokens, at most CPU_MEMORY_FRACTION of `available` bytes, at
    least MIN_CPU_POOL_BYTES.  `build(budget)` makes the plan (its page
    sizes do not depend on the budget)."""
    probe = MemoryManager(build(MIN_CPU_POOL_BYTES))
    want = max(MIN_CPU_POOL_BYTES, CPU_FULL_CONTEXTS * request_bytes(probe, context, chunk))
    cap = int(available * CPU_MEMORY_FRACTION) if available else want
    pool = max(MIN_CPU_POOL_BYTES, min(want, cap))
    log.info("default CPU KV pool: %s (%d requests of %d tokens need %s; %s of %s available)", mib(pool),
             CPU_FULL_CONTEXTS, context, mib(want), f"{CPU_MEMORY_FRACTION:.0%}",
             mib(available) if available else "unknown")
    return pool


def fit_max_model_len(manager: MemoryManager, *, model_len: int, user_len: int | None, chunk: int,
                      spare: int, budget_source: str) -> int:
    """The context limit the engine runs with.  `model_len`: the model's
    own; `user_len`: max_model_len as configured (None: not set); `spare`:
    extra tokens each request holds (speculative drafts); `budget_source`:
    how the pool size was chosen, named in messages (e.g.
    "kv_cache_memory=256 MiB (--kv-cache-memory)").  Lowers an unset limit
    to what fits (logged); raises ValueError naming the fields when a set
    one cannot fit, or when the pool holds no usable request at all."""
    wanted = user_len if user_len is not None else model_len
    cap = pool_capacity(manager, wanted + spare, chunk)
    log.info("%s", cap.describe())
    longest = cap.longest_request - spare
    if wanted <= longest:
        return wanted
    need = request_bytes(manager, wanted + spare, chunk)
    if user_len is not None or longest < 2:
        what = f"max_model_len={user_len} (--max-model-len)" if user_len is not None else \
            "max_model_len: even the smallest request (2 tokens)"
        raise ValueError(f"{what} does not fit the KV pool: {budget_source} gives {mib(cap.pool_bytes)}, "
                         f"which holds one request of at most {max(longest, 0)} tokens; raise the KV budget to "
                         f"at least {mib(need)} or lower max_model_len to {max(longest, 2)} or less")
    log.warning("max_model_len lowered from the model's %d to %d tokens, the longest request the KV pool holds "
                "(%s gives %s; a %d-token request needs %s): set --kv-cache-memory or --max-model-len to choose",
                model_len, longest, budget_source, mib(cap.pool_bytes), wanted, mib(need))
    return longest


def mib(n: int) -> str:
    """Bytes as MiB (GiB from 10 GiB), for messages."""
    return f"{n / 2**20:.0f} MiB" if n < 10 * 2**30 else f"{n / 2**30:.1f} GiB"
