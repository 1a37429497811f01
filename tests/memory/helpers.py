"""Hand-built tiny plans for memory and scheduler tests (no planner needed)."""

from __future__ import annotations

from math import lcm

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec


def tiny_plan(specs: list[tuple[LayerSpec, int, int]], num_large: int, allocator: str = "jenga",
              base: int = 4, static_share: tuple[int, ...] = ()) -> MemoryPlan:
    """specs: (spec, num_layers, page_tokens) per group; layer_page_bytes is
    page_tokens * unit bytes (one state for mamba)."""
    sizes = [pt * s.unit_bytes() * n for s, n, pt in specs]
    large = lcm(*sizes)
    groups, layer = [], 0
    for gid, ((spec, n, pt), size) in enumerate(zip(specs, sizes)):
        groups.append(Group(gid, spec, tuple(range(layer, layer + n)), pt, pt * spec.unit_bytes(),
                            large // size))
        layer += n
    return MemoryPlan(tuple(groups), large, num_large, allocator, base, static_share)


FULL = LayerSpec("full", "float32", 1, 1)          # 8 bytes per token
SLIDE8 = LayerSpec("sliding", "float32", 1, 1, window=8)
CHUNK8 = LayerSpec("chunked", "float32", 1, 1, chunk=8)
BUDGET8 = LayerSpec("budget", "float32", 1, 1, budget=8)
MAMBA = LayerSpec("mamba", "float32", conv_state=(2,), ssm_state=(6,))   # 32 bytes per state
CROSS = LayerSpec("cross", "float32", 1, 1)
VISION = LayerSpec("vision", "float32", hidden_size=2)
