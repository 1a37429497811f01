"""Tensor-parallel building blocks: a rank's share of a layer, Megatron-style.

`TPShard` says which rank of how many this model copy is, and carries the
process group its all-reduces run on.  The layers that the families use:

- `ColumnParallelLinear`: keeps a contiguous range of the output rows
  (attention heads, MLP intermediate columns); no communication.
- `RowParallelLinear`: keeps the matching range of input columns, sums the
  ranks' partial outputs with one all-reduce, then adds the bias once.
- `head_ranges`: which query heads and KV heads a rank owns; when the ranks
  outnumber the KV heads each rank keeps one KV head, replicated across the
  `size / num_kv_heads` ranks whose query heads read it (as vLLM does).

A module's `shard_slices` maps a parameter name to the (dim, start, stop)
range of the checkpoint tensor it holds (or several ranges of one dim, for
fused projections such as Mamba's in_proj); the loader reads only that range
from the safetensors file.  With `NO_TP` (one rank) every layer is the
plain full layer and no collective runs.  Only `model/` and `engine/` import
this (torch lives here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..memory.spec import kv_heads_per_rank

# (dim, start, stop) of a checkpoint tensor, or (dim, ((start, stop), ...)):
# several ranges of one dim, concatenated (a fused projection's parts)
Slice = tuple


@dataclass(frozen=True)
class TPShard:
    """Rank `rank` of `size`; `group` is a torch.distributed ProcessGroup
    (None only when size is 1)."""

    rank: int = 0
    size: int = 1
    group: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(f"tensor-parallel rank {self.rank!r} of size {self.size!r} is not a valid rank")
        if self.size > 1 and self.group is None:
            raise ValueError("a tensor-parallel shard of size > 1 needs a process group")

    @property
    def driver(self) -> bool:
        """Rank 0: the rank that samples (and the only one with an LM head)."""
        return self.rank == 0

    def split(self, n: int, what: str) -> tuple[int, int]:
        """This rank's [start, stop) of `n` items split evenly; ValueError
        naming `what` when `n` does not divide."""
        if n % self.size:
            raise ValueError(f"{what}={n} is not divisible by tensor_parallel_size={self.size}")
        per = n // self.size
        return self.rank * per, (self.rank + 1) * per

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks in place (returns it); no-op for one rank."""
        if self.size > 1:
            self.group.allreduce([x]).wait()
        return x


NO_TP = TPShard()


def head_ranges(num_heads: int, num_kv_heads: int, shard: TPShard) -> tuple[tuple[int, int], tuple[int, int]]:
    """(query head range, KV head range) of this rank.  With more ranks
    than KV heads, rank r keeps KV head r * num_kv_heads // size: the one
    its query heads (a contiguous block of a GQA group) attend with."""
    q = shard.split(num_heads, "num_attention_heads")
    per = kv_heads_per_rank(num_kv_heads, shard.size)
    if num_kv_heads >= shard.size:
        return q, (shard.rank * per, (shard.rank + 1) * per)
    kv = shard.rank * num_kv_heads // shard.size
    return q, (kv, kv + 1)


def _ranges(where: Slice) -> tuple[int, tuple[tuple[int, int], ...]]:
    return (where[0], ((where[1], where[2]),)) if len(where) == 3 else (where[0], tuple(where[1]))


class ColumnParallelLinear(nn.Linear):
    """y = x W[rows]^T + b[rows]: the output rows [start, stop) of an
    `in_features x out_total` linear layer (all of them with NO_TP); `rows`
    may also be several (start, stop) ranges, kept in order."""

    def __init__(self, in_features: int, rows, bias: bool, out_total: int) -> None:
        ranges = tuple(rows) if isinstance(rows[0], tuple) else (tuple(rows),)
        super().__init__(in_features, sum(e - s for s, e in ranges), bias=bias)
        self.shard_slices: dict[str, Slice] = {}
        if ranges != ((0, out_total),):
            where = (0, ranges) if len(ranges) > 1 else (0, *ranges[0])
            self.shard_slices = {"weight": where, "bias": where}


class RowParallelLinear(nn.Module):
    """y = sum over ranks of x_r W[:, cols_r]^T, then + b: the input columns
    [start, stop) of a linear layer; one all-reduce per call when sharded
    (`reduce=False`: the caller sums several partial outputs at once; then
    the bias is added on rank 0 only)."""

    def __init__(self, cols: tuple[int, int], out_features: int, bias: bool, in_total: int,
                 shard: TPShard, reduce: bool = True) -> None:
        super().__init__()
        start, stop = cols
        self.weight = nn.Parameter(torch.empty(out_features, stop - start), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.shard, self.reduce = shard, reduce
        self.shard_slices: dict[str, Slice] = {}
        if (start, stop) != (0, in_total):
            self.shard_slices = {"weight": (1, start, stop)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if self.reduce:
            y = self.shard.all_reduce(y)
        elif not self.shard.driver:
            return y
        return y if self.bias is None else y + self.bias


def narrow(tensor: torch.Tensor, where: Slice | None) -> torch.Tensor:
    """The (dim, start, stop) range of a full checkpoint tensor."""
    if where is None:
        return tensor
    dim, ranges = _ranges(where)
    parts = [tensor.narrow(dim, s, e - s) for s, e in ranges]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def read_slice(sf, name: str, where: Slice | None) -> torch.Tensor:
    """Read tensor `name` from an open safetensors file, only the range
    `where` of it (the whole tensor when None)."""
    if where is None:
        return sf.get_tensor(name)
    dim, ranges = _ranges(where)
    view, parts = sf.get_slice(name), []
    for start, stop in ranges:
        index = [slice(None)] * len(view.get_shape())
        index[dim] = slice(start, stop)
        parts.append(view[tuple(index)])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)
