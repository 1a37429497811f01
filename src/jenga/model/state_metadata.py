"""Recurrent-state metadata: built once per mamba group per step from a StepPlan.

A request's Mamba state lives in one page of each mamba group
(`SeqStep.page_tables[g] == (page,)`): every mamba layer of the group keeps
its conv and SSM state in its share of that page (`KVPool.state_view`).  A
mixer reads the page, continues the state over the step's tokens and writes
it back; a fresh request's page was zeroed and a prefix hit's page was
copied from a checkpoint before the forward, so the mixer never needs to
know which.  `SeqStep.state_saves` ask for the state after an exact
position to be written into another page (a prefix-cache checkpoint, or the
state after a draft token).  Seqs are bucketed by their number of new
tokens, so all decodes of a step advance their states in one batched
gather/scatter.  `StateMetadata` is passed to `forward` explicitly, like
the attention metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..memory.plan import MemoryPlan
from ..sched.step import NO_PAGE, StepPlan


@dataclass(frozen=True)
class StateBatch:
    """Seqs whose states advance together; each has `rows.shape[1]` new tokens.

    rows [B, L]: the seqs' token rows in the step.  pages [B]: the page
    holding each seq's running state.  saves: (b, n, page) = write seq b's
    state after the first n of its L new tokens into `page`.
    """

    rows: torch.Tensor
    pages: torch.Tensor
    saves: tuple[tuple[int, int, int], ...] = ()

    @property
    def keep(self) -> tuple[int, ...]:
        """The distinct n the scan must report states after."""
        return tuple(sorted({n for _, n, _ in self.saves}))


@dataclass(frozen=True)
class GroupStateMetadata:
    gid: int
    batches: tuple[StateBatch, ...]


@dataclass(frozen=True)
class StateMetadata:
    """Per mamba group of the model, its batches; and the layer -> gid map."""

    groups: dict[int, GroupStateMetadata]
    layer_group: dict[int, int]

    def for_layer(self, layer_idx: int) -> GroupStateMetadata:
        """The metadata of the group holding `layer_idx`; ValueError if none."""
        gid = self.layer_group.get(layer_idx)
        if gid is None or gid not in self.groups:
            raise ValueError(f"no state metadata for layer {layer_idx}")
        return self.groups[gid]


def check_state_plan(shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]], plan: MemoryPlan) -> None:
    """ValueError unless every recurrent layer (layer -> (conv_state,
    ssm_state) element shapes) sits in a mamba group of `plan` with exactly
    these shapes."""
    where = {layer: g for g in plan.groups for layer in g.layers}
    for layer, (conv, ssm) in shapes.items():
        g = where.get(layer)
        if g is None:
            raise ValueError(f"model layer {layer} is in no group of the plan")
        if (tuple(g.spec.conv_state), tuple(g.spec.ssm_state)) != (tuple(conv), tuple(ssm)):
            raise ValueError(f"layer {layer}: plan group {g.gid} ({g.spec.describe()}) stores conv "
                             f"{g.spec.conv_state} / ssm {g.spec.ssm_state}, model has {conv} / {ssm}")


def _state_page(s, gid: int) -> int:
    table = s.page_tables[gid]
    if len(table) != 1 or table[0] == NO_PAGE:
        raise ValueError(f"request {s.req_id}: mamba group {gid} page table must be one running-state "
                         f"page, got {table}")
    return table[0]


def _saves(s, gids: set[int]) -> dict[int, list[tuple[int, int]]]:
    """The seq's saves per gid as (n new tokens, page); ValueError on a save
    outside the step's tokens or for a group without state layers."""
    out: dict[int, list[tuple[int, int]]] = {}
    for gid, position, page in s.state_saves:
        if gid not in gids:
            raise ValueError(f"request {s.req_id}: state save for group {gid}, which holds no recurrent "
                             "layer of the model")
        if not s.start < position <= s.end:
            raise ValueError(f"request {s.req_id}: state save at position {position} outside the step's "
                             f"tokens ({s.start}, {s.end}]")
        out.setdefault(gid, []).append((position - s.start, page))
    return out


def build_state_metadata(step: StepPlan, plan: MemoryPlan, layers: Iterable[int],
                         device: torch.device | str = "cpu") -> StateMetadata:
    """Metadata for every group holding one of the model's recurrent
    `layers`.  Raises ValueError on a layer in no group, a page table that
    is not one page, or a bad state save."""
    device = torch.device(device)
    wanted = set(layers)
    layer_group = {layer: g.gid for g in plan.groups for layer in g.layers if layer in wanted}
    missing = wanted - layer_group.keys()
    if missing:
        raise ValueError(f"recurrent layers {sorted(missing)} are in no group of the plan")
    gids = set(layer_group.values())
    starts, buckets = [0], {}
    for i, s in enumerate(step.seqs):
        starts.append(starts[-1] + s.num_tokens)
        buckets.setdefault(s.num_tokens, []).append(i)
    saves = [_saves(s, gids) for s in step.seqs]
    groups = {}
    for gid in sorted(gids):
        batches = []
        for idx in buckets.values():
            rows = [range(starts[i], starts[i + 1]) for i in idx]
            pages = [_state_page(step.seqs[i], gid) for i in idx]
            batch_saves = tuple((b, n, page) for b, i in enumerate(idx) for n, page in saves[i].get(gid, ()))
            batches.append(StateBatch(torch.tensor(rows, dtype=torch.long, device=device),
                                      torch.tensor(pages, dtype=torch.long, device=device), batch_saves))
        groups[gid] = GroupStateMetadata(gid, tuple(batches))
    return StateMetadata(groups, layer_group)
