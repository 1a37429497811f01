"""Helpers for model tests: hand-built plans, a sequential page allocator
that releases out-of-scope pages (NO_PAGE) and reuses them, StepPlan
builders, and tiny random-weight HF checkpoints."""

from __future__ import annotations

from math import lcm

import torch

from jenga.memory.plan import Group, MemoryPlan
from jenga.memory.spec import LayerSpec
from jenga.memory.policies import first_key
from jenga.sched.params import SamplingParams
from jenga.sched.step import NO_PAGE, SeqStep

GREEDY = SamplingParams(max_tokens=64, temperature=0.0)


def spec_for(heads: int, head_dim: int, window: int, chunk: int, dtype: str = "float32") -> LayerSpec:
    kind = "sliding" if window else "chunked" if chunk else "full"
    return LayerSpec(kind, dtype, heads, head_dim, window=window, chunk=chunk)


def plan_from_specs(specs: list[LayerSpec], page_tokens: int, num_large: int) -> MemoryPlan:
    """Group equal specs (layers in order), every group with `page_tokens`."""
    by_spec: dict[LayerSpec, list[int]] = {}
    for i, s in enumerate(specs):
        by_spec.setdefault(s, []).append(i)
    sizes = [page_tokens * s.bytes_per_token * len(layers) for s, layers in by_spec.items()]
    large = lcm(*sizes)
    groups = tuple(Group(gid, s, tuple(layers), page_tokens, page_tokens * s.bytes_per_token, large // size)
                   for gid, ((s, layers), size) in enumerate(zip(by_spec.items(), sizes)))
    return MemoryPlan(groups, large, num_large)


def plan_for_model(model, page_tokens: int = 4, num_large: int = 64) -> MemoryPlan:
    """A plan from the model's own view of its layers."""
    shapes = model.layer_kv_shapes()
    return plan_from_specs([spec_for(*shapes[i]) for i in sorted(shapes)], page_tokens, num_large)


def plan_for_folder(path, allocator: str = "jenga", page_tokens: int = 4, budget: int = 1 << 20) -> MemoryPlan:
    """The memory side's plan: `shape_from_config` of the folder's
    config.json in fp32 (the CPU compute dtype), then `build_plan`."""
    from jenga.memory.planner import build_plan
    from jenga.memory.shapes.hf import shape_from_config
    from jenga.model.loader import read_config
    shape = shape_from_config(read_config(path), dtype="float32")
    return build_plan(shape, budget, allocator=allocator, page_tokens=page_tokens)


class Pages:
    """Sequential page assignment: each group carves small pages out of the
    large pages it takes (in order), so groups never share bytes; tables grow
    to cover a step, pages no later token needs are released (NO_PAGE) and
    reused first."""

    def __init__(self, plan: MemoryPlan) -> None:
        self.plan = plan
        self.large = list(range(plan.num_large_pages))[::-1]
        self.free: list[list[int]] = [[] for _ in plan.groups]
        self.tables: dict[str, list[list[int]]] = {}
        self.released: dict[str, int] = {}

    def _alloc(self, gid: int) -> int:
        if not self.free[gid]:
            n = self.plan.groups[gid].per_large
            lp = self.large.pop()
            self.free[gid] = list(range(lp * n, (lp + 1) * n))[::-1]
        return self.free[gid].pop()

    def grow(self, req: str, end: int) -> None:
        tables = self.tables.setdefault(req, [[] for _ in self.plan.groups])
        for g, table in zip(self.plan.groups, tables):
            while len(table) * g.page_tokens < end:
                table.append(self._alloc(g.gid))

    def release(self, req: str, next_pos: int) -> None:
        for g, table in zip(self.plan.groups, self.tables[req]):
            lo = first_key(g.spec, next_pos) // g.page_tokens
            for i in range(min(lo, len(table))):
                if table[i] != NO_PAGE:
                    self.free[g.gid].append(table[i])
                    table[i] = NO_PAGE
                    self.released[req] = self.released.get(req, 0) + 1

    def snapshot(self, req: str) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(t) for t in self.tables[req])


def seq(pages: Pages, req: str, tokens: list[int], start: int, sample: bool) -> SeqStep:
    pages.grow(req, start + len(tokens))
    return SeqStep(req, tuple(tokens), start, pages.snapshot(req), sample, GREEDY, start + len(tokens))


def tiny_checkpoint(hf_model_cls, config, path, seed: int = 0):
    """Random-weight HF model saved to `path`; 1-D weights (norms, biases,
    sinks) get noise so that loading them wrongly shows."""
    torch.manual_seed(seed)
    config._attn_implementation = "eager"
    model = hf_model_cls(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(path)
    model.generation_config.eos_token_id = None
    return model
