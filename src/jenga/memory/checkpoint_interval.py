"""The default spacing of recurrent-state (Mamba) checkpoints, from the plan.

A checkpoint is a copy of every recurrent group's state, cached so a later
request with the same prefix skips recomputing it (policies/mamba.py).  On a
hybrid the state is large next to the attention K/V of a token: on
Jamba-1.5-Mini one checkpoint (28 Mamba layers) is 16.5 MB while a token of
its 4 attention layers is 16 KB, so a checkpoint every 512 tokens took twice
the memory of the K/V it sits beside, and in a small pool the checkpoints
crowded the documents they were meant to speed up out of the cache.

The rule follows Marconi (Pan et al., MLSys'25): a cached state is worth its
place when it saves at least the memory it costs.  So by default a hybrid
checkpoints once per the number of tokens whose attention K/V costs as much
as one checkpoint, and never more often than every 512 tokens.
"""

from __future__ import annotations

from math import lcm

from .plan import MemoryPlan
from .policies import policy_for

MIN_INTERVAL = 512


def default_mamba_interval(plan: MemoryPlan) -> int:
    """Tokens between regular checkpoints when the configuration says "auto".

    For each model tag (the main model, a draft) that has recurrent groups:
    n = ceil(state bytes / attention bytes per token), where state bytes sums
    the small page of every recurrent group of the tag (one state each per
    request) and attention bytes per token sums `small_page_bytes /
    page_tokens` over the tag's per-sequence-token groups (neither recurrent
    nor image-keyed: full, sliding, chunked), padding included since the
    pool charges it.  n is rounded up to a multiple of lcm(512, the
    manager's hit alignment) — the alignment is lcm(base_page_tokens, those
    groups' page_tokens), and a checkpoint off it could never be hit — so
    the result is at least that multiple.  A tag with no attention K/V (a
    pure recurrent model) gets that minimum, as before.  Hits must end where
    every group can serve them, so one interval serves the whole plan: the
    largest over the tags (each tag's checkpoints then cost at most the K/V
    they cover).  A plan without recurrent groups gets the minimum (unused).
    Pure function of the plan; raises nothing."""
    token_groups = [g for g in plan.groups
                    if policy_for(g.kind).token_paged]
    step = lcm(MIN_INTERVAL, plan.base_page_tokens, *(g.page_tokens for g in token_groups))
    best = step
    tags = {g.spec.model for g in plan.groups if policy_for(g.kind).recurrent}
    for tag in sorted(tags):
        state = sum(g.small_page_bytes for g in plan.groups
                    if g.spec.model == tag and policy_for(g.kind).recurrent)
        # per-token bytes as a fraction over the common page size, in integers
        mine = [g for g in token_groups if g.spec.model == tag]
        if not mine:
            continue
        pages = lcm(*(g.page_tokens for g in mine))
        per_pages = sum(g.small_page_bytes * (pages // g.page_tokens) for g in mine)   # bytes of `pages` tokens
        tokens = -(-state * pages // per_pages)
        best = max(best, -(-tokens // step) * step)
    return best
