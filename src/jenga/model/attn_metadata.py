"""Attention metadata: built once per group per step from a StepPlan.

Every attention layer of a group reads the same `GroupAttnMetadata`: where
the step's new K/V go (slot mapping), the padded page table, context lengths,
and the *gather batches* of the portable path.  Seqs are bucketed by their
number of new tokens, so all decodes of a step form one batch and equal-length
prefill chunks share one; each batch lists the pages in scope per seq (from
the first page the group's window or chunk still needs, so released NO_PAGE
entries are never read), their key positions, and the mask for the group's
own window/chunk.  `AttnMetadata` holds one per group plus the layer -> group
map and is passed to `forward` explicitly; nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..memory.plan import Group, MemoryPlan
from ..memory.policies import first_key, serves
from ..memory.spec import LayerSpec
from ..sched.step import NO_PAGE, SeqStep, StepPlan


def scope_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, chunk: int) -> torch.Tensor:
    """Bool [B, Q, K] mask: causal, plus the sliding window or chunk.
    q_pos is [B, Q] and k_pos [B, K]."""
    q = q_pos.unsqueeze(-1)
    k = k_pos.unsqueeze(-2)
    mask = k <= q
    if window:
        mask = mask & (k > q - window)
    if chunk:
        mask = mask & (k >= torch.div(q, chunk, rounding_mode="floor") * chunk)
    return mask


@dataclass(frozen=True)
class AttnBatch:
    """Seqs of one group attended together; each has `rows.shape[1]` new tokens.

    rows [B, Q]: indices of the seqs' tokens in the step's token rows.
    q_pos [B, Q]: their positions.  pages [B, G]: page ids in scope, padded
    with a valid page (0) whose keys lie after every query, so the causal
    mask drops them.  page_start [B]: position of the first gathered key.
    k_pos [B, G*P]: position of each gathered key.  k_valid [B, G*P]: the
    key was written (position < the seq's context length); other slots hold
    stale bytes, possibly another dtype's, so they must be zeroed, not just
    masked (0 * NaN is NaN).  mask [B, Q, G*P]: for the group's window/chunk
    (layers with a narrower scope build their own).  fresh: every seq
    starts at position 0 (a prompt's first chunk, no cached prefix), so the
    step's own new K/V are the whole context (the causal fast path).
    """

    rows: torch.Tensor
    q_pos: torch.Tensor
    pages: torch.Tensor
    page_start: torch.Tensor
    k_pos: torch.Tensor
    k_valid: torch.Tensor
    mask: torch.Tensor
    fresh: bool = False

    def to(self, device: torch.device) -> AttnBatch:
        """This batch with its tensors on `device` (`to_device`)."""
        return AttnBatch(*(to_device(t, device) for t in (
            self.rows, self.q_pos, self.pages, self.page_start, self.k_pos, self.k_valid, self.mask)),
            fresh=self.fresh)


@dataclass(frozen=True)
class GroupAttnMetadata:
    """One group's view of a step.

    query_start: token-row offsets of the seqs (len num_seqs + 1);
        query_start_t: the same as an int32 device tensor (the Triton path's).
    positions, slot_pages, slot_offsets, slot_mapping: per new token, [T];
        slot = page * page_tokens + offset in the group's pool view.
    page_table [B, max_pages] with NO_PAGE replaced by 0, page_valid marks
        the real entries.  context_lens [B]: tokens in the pool after the
        step (start + new tokens).  window / chunk: the group spec's scope.
    spec: the group's layer spec (its policy answers scope questions).
    """

    gid: int
    page_tokens: int
    window: int
    chunk: int
    query_start: tuple[int, ...]
    query_start_t: torch.Tensor
    positions: torch.Tensor
    slot_pages: torch.Tensor
    slot_offsets: torch.Tensor
    slot_mapping: torch.Tensor
    page_table: torch.Tensor
    page_valid: torch.Tensor
    context_lens: torch.Tensor
    batches: tuple[AttnBatch, ...]
    spec: LayerSpec

    @property
    def num_seqs(self) -> int:
        return len(self.query_start) - 1

    def covers(self, window: int, chunk: int) -> bool:
        """True when a layer with this window/chunk needs no key outside the
        pages this metadata gathers (its scope is within the group's)."""
        return serves(self.spec, window, chunk)


@dataclass(frozen=True)
class AttnMetadata:
    """Per-group metadata of one step, the model-layer -> group map, the
    step's token positions [T], and the attention backend to use ("auto",
    "portable" or "triton"; see attention.paged_attention)."""

    groups: tuple[GroupAttnMetadata | None, ...]
    layer_group: dict[int, int]
    positions: torch.Tensor
    backend: str = "auto"

    def for_layer(self, layer_idx: int) -> GroupAttnMetadata:
        """The metadata of the group holding `layer_idx`; ValueError if none."""
        gid = self.layer_group.get(layer_idx)
        meta = None if gid is None else self.groups[gid]
        if meta is None:
            raise ValueError(f"no attention metadata for layer {layer_idx}")
        return meta


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`.  Bound for CUDA it goes through pinned
    memory and is copied non-blocking, so building a step's inputs never
    waits for the device (a pageable copy would)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _seq_scope(s: SeqStep, g: Group, table: tuple[int, ...]) -> tuple[int, int]:
    """First and last (inclusive) page index the seq's new tokens attend to;
    ValueError when one of them is NO_PAGE or missing."""
    P = g.page_tokens
    lo = first_key(g.spec, s.start) // P   # the group's policy says what is still in scope
    hi = (s.end - 1) // P
    if len(table) <= hi:
        raise ValueError(f"request {s.req_id}: group {g.gid} page table has {len(table)} entries, "
                         f"tokens up to {s.end} need {hi + 1}")
    for i in range(lo, hi + 1):
        if table[i] == NO_PAGE:
            raise ValueError(f"request {s.req_id}: group {g.gid} page {i} is NO_PAGE but "
                             f"the step's tokens at {s.start}..{s.end - 1} attend to it")
    return lo, hi


def _batch(seqs: list[SeqStep], idx: list[int], starts: list[int], g: Group,
           scopes: list[tuple[int, int]]) -> AttnBatch:
    P = g.page_tokens
    G = max(scopes[i][1] - scopes[i][0] + 1 for i in idx)
    rows, q_pos, pages, page_start = [], [], [], []
    for i in idx:
        s, (lo, hi) = seqs[i], scopes[i]
        rows.append(range(starts[i], starts[i] + s.num_tokens))
        q_pos.append(range(s.start, s.end))
        table = s.page_tables[g.gid]
        pages.append(list(table[lo:hi + 1]) + [0] * (G - (hi - lo + 1)))
        page_start.append(lo * P)
    q_pos_t = torch.tensor(q_pos, dtype=torch.long)
    page_start_t = torch.tensor(page_start, dtype=torch.long)
    k_pos = page_start_t.unsqueeze(1) + torch.arange(G * P, dtype=torch.long)
    k_valid = k_pos < q_pos_t[:, -1:] + 1
    return AttnBatch(torch.tensor(rows, dtype=torch.long), q_pos_t, torch.tensor(pages, dtype=torch.long),
                     page_start_t, k_pos, k_valid, scope_mask(q_pos_t, k_pos, g.spec.window, g.spec.chunk),
                     fresh=all(seqs[i].start == 0 for i in idx))


def build_group_metadata(step: StepPlan, g: Group, device: torch.device) -> GroupAttnMetadata:
    """Metadata of group `g` for `step`; ValueError on a page table that lacks
    a page the step writes or reads."""
    P, seqs = g.page_tokens, step.seqs
    starts, positions, slot_pages, scopes, buckets = [0], [], [], [], {}
    for i, s in enumerate(seqs):
        table = s.page_tables[g.gid]
        scopes.append(_seq_scope(s, g, table))
        positions.extend(range(s.start, s.end))
        slot_pages.extend(table[p // P] for p in range(s.start, s.end))
        starts.append(starts[-1] + s.num_tokens)
        buckets.setdefault(s.num_tokens, []).append(i)
    width = max((len(s.page_tables[g.gid]) for s in seqs), default=0)
    table = torch.full((len(seqs), width), NO_PAGE, dtype=torch.long)
    for i, s in enumerate(seqs):
        table[i, :len(s.page_tables[g.gid])] = torch.tensor(s.page_tables[g.gid], dtype=torch.long)
    pos_t = torch.tensor(positions, dtype=torch.long)
    pages_t = torch.tensor(slot_pages, dtype=torch.long)
    offs_t = pos_t % P
    batches = tuple(_batch(seqs, idx, starts, g, scopes) for idx in buckets.values())

    def to(t: torch.Tensor) -> torch.Tensor:
        return to_device(t, device)

    return GroupAttnMetadata(
        g.gid, P, g.spec.window, g.spec.chunk, tuple(starts), to(torch.tensor(starts, dtype=torch.int32)),
        to(pos_t), to(pages_t), to(offs_t),
        to(pages_t * P + offs_t), to(table.clamp(min=0)), to(table >= 0),
        to(torch.tensor([s.end for s in seqs], dtype=torch.int32)),
        tuple(b.to(device) for b in batches), g.spec)


def build_attn_metadata(step: StepPlan, plan: MemoryPlan, layers: Iterable[int],
                        device: torch.device | str = "cpu", backend: str = "auto") -> AttnMetadata:
    """Metadata for every group holding one of the model's attention
    `layers` (other groups, e.g. mamba, get None)."""
    device = torch.device(device)
    wanted = set(layers)
    layer_group = {layer: g.gid for g in plan.groups for layer in g.layers}
    missing = wanted - layer_group.keys()
    if missing:
        raise ValueError(f"attention layers {sorted(missing)} are in no group of the plan")
    metas = tuple(build_group_metadata(step, g, device) if wanted & set(g.layers) else None
                  for g in plan.groups)
    positions = [p for s in step.seqs for p in range(s.start, s.end)]
    return AttnMetadata(metas, layer_group, to_device(torch.tensor(positions, dtype=torch.long), device), backend)
