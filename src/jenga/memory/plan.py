"""MemoryPlan: groups, small pages, the LCM large page, and the page budget.

The plan is the frozen contract between the memory manager, the scheduler and
the tensor pool.  Layers with equal specs form a group; a group allocates
*small pages* of `page_tokens` tokens of every one of its layers (a mamba
small page is one state of every layer).  The pool hands out *large pages* of
`large_page_bytes`, a common multiple of every small page size, so group g
can view the pool as `num_large_pages * per_large` small pages and page id s
lies in large page `s // per_large`.

`build_plan` chooses page sizes (see `planner.py` for how the LCM is bounded)
and the allocator flavour: `jenga`, or one of the paper's baselines
(`max-page`, `static`, `uniform`, built in `planner.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import LayerSpec

ALLOCATORS = ("jenga", "max-page", "static", "uniform")


@dataclass(frozen=True)
class Group:
    """One group of layers with an identical spec.

    gid: index in plan.groups.  layers: model layer indices, in order.
    page_tokens: tokens per small page (1 "state" for mamba).
    layer_page_bytes: bytes of one layer's part of a small page, padding
        included; layer j of the group sits at `j * layer_page_bytes`.
    small_page_bytes: layer_page_bytes * len(layers).
    padding_bytes: bytes of each small page that hold nothing.
    per_large: small pages per large page.
    holds_encoder_tokens: the group stores encoder (image) tokens besides the
        sequence's tokens (max-page's merged group on cross-attention models).
    """

    gid: int
    spec: LayerSpec
    layers: tuple[int, ...]
    page_tokens: int
    layer_page_bytes: int
    per_large: int
    padding_bytes: int = 0
    holds_encoder_tokens: bool = False

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def small_page_bytes(self) -> int:
        return self.layer_page_bytes * len(self.layers)

    @property
    def useful_page_bytes(self) -> int:
        return self.small_page_bytes - self.padding_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Everything fixed about memory for one engine.

    allocator: one of ALLOCATORS; decides placement and eviction rules in the
        manager (see `AllocatorRules`).
    static_share: for the `static` allocator, large pages reserved per group.
    choices: human-readable notes on what the planner chose (LCM bounding).
    base_page_tokens: the prefix-cache hash block; every token group's
        page_tokens is a multiple of it.
    vision_outside_pool: the model has vision embeddings but the plan keeps
        none in the pool (max-page, as vLLM v0): the encoder reruns for
        every chunk that reaches an image.
    """

    groups: tuple[Group, ...]
    large_page_bytes: int
    num_large_pages: int
    allocator: str = "jenga"
    base_page_tokens: int = 16
    static_share: tuple[int, ...] = ()
    choices: tuple[str, ...] = field(default=())
    model_name: str = ""
    max_context: int = 0
    vision_outside_pool: bool = False

    def __post_init__(self) -> None:
        if self.allocator not in ALLOCATORS:
            raise ValueError(f"unknown allocator {self.allocator!r}; known: {', '.join(ALLOCATORS)}")
        for g in self.groups:
            if self.large_page_bytes % g.small_page_bytes:
                raise ValueError(f"group {g.gid}: small page {g.small_page_bytes} B does not divide "
                                 f"the large page {self.large_page_bytes} B")
            if g.per_large * g.small_page_bytes != self.large_page_bytes:
                raise ValueError(f"group {g.gid}: per_large inconsistent with page sizes")

    @property
    def pool_bytes(self) -> int:
        return self.large_page_bytes * self.num_large_pages

    @property
    def padding_fraction(self) -> float:
        """Worst per-group fraction of a small page that is padding."""
        return max((g.padding_bytes / g.small_page_bytes for g in self.groups), default=0.0)

    def num_small_pages(self, gid: int) -> int:
        return self.num_large_pages * self.groups[gid].per_large

    def describe(self) -> str:
        lines = [f"allocator={self.allocator} large_page={self.large_page_bytes} B "
                 f"x {self.num_large_pages} = {self.pool_bytes / 2**30:.2f} GiB"]
        for g in self.groups:
            lines.append(f"  group {g.gid}: {g.spec.describe()} x{len(g.layers)} layers, "
                         f"{g.page_tokens} tok/page, small page {g.small_page_bytes} B "
                         f"(padding {g.padding_bytes} B), {g.per_large} per large page")
        lines += [f"  note: {c}" for c in self.choices]
        return "\n".join(lines)
