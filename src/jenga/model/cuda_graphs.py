"""CUDA graphs for decode steps, captured per batch-size bucket (as vLLM does).

A decode step (every seq computes one token) of B seqs is padded up to the
smallest capture size >= B and replays the graph captured for that size.
A graph replays fixed kernels on fixed addresses, so everything the forward
reads lives in static buffers (`DecodeInputs`): the token ids, positions
and, per attention group, the slot pages and offsets, a page table as wide
as `max_model_len` needs, context lengths and query starts.  Each step
fills a host twin of those buffers (pinned on CUDA) and copies it to the
device in one non-blocking copy, so a step never waits for the device.
Padding rows write nowhere (slot page -1, skipped by the Triton K/V store)
and read page 0; their logits are dropped.

Only the Triton attention path reads nothing but those fixed-shape tensors,
so graphs need it; models whose decode step talks to the host (a routed
MoE picks its experts there) or keeps per-request recurrent state or images
run eagerly (`unsupported_reason`).  `DecodeGraphs.run` on a device without
captured graphs (the CPU tests, under TRITON_INTERPRET=1) runs the same
padded forward over the same buffers eagerly, which is what a capture
records.  The runner (engine/runner.py) asks `run` first and falls back to
its eager path when a step is not a graphable decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..memory.plan import MemoryPlan
from ..sched.step import NO_PAGE, StepPlan
from .attn_metadata import AttnMetadata, GroupAttnMetadata
from .kv_pool import KVPool


@dataclass(frozen=True)
class CudaGraphConfig:
    """Decode graphs of one runner.

    max_num_seqs: the largest decode batch to capture (the scheduler's
        max_num_seqs); larger batches run eagerly.
    max_model_len: the longest context a seq reaches; it sizes the static
        page tables (a step whose tables are longer runs eagerly).
    Raises ValueError naming the field on a value below 1.
    """

    max_num_seqs: int
    max_model_len: int

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_model_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")


def capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """Batch sizes to capture: 1, 2, 4, then every multiple of 8, up to the
    first size >= max_num_seqs (vLLM's ladder: padding wastes under 8 rows
    past 8, and few graphs are needed)."""
    ladder = [1, 2, 4] + list(range(8, max_num_seqs + 8, 8))
    return tuple(s for s in ladder if s < max_num_seqs) + (next(s for s in ladder if s >= max_num_seqs),)


def bucket_for(batch: int, sizes: tuple[int, ...]) -> int | None:
    """The smallest capture size >= batch; None when batch exceeds them all."""
    return next((s for s in sizes if s >= batch), None)


def graph_config(model, device: torch.device, *, enforce_eager: bool, max_num_seqs: int,
                 max_model_len: int) -> CudaGraphConfig | None:
    """The engine's switch: decode graphs for `model` unless `enforce_eager`,
    the device is not CUDA, triton is missing (graphs replay the Triton
    path) or the model cannot be captured (`unsupported_reason`)."""
    from .attention import triton_available
    if enforce_eager or device.type != "cuda" or not triton_available() or unsupported_reason(model):
        return None
    return CudaGraphConfig(max_num_seqs, max_model_len)


def unsupported_reason(model) -> str | None:
    """Why `model`'s decode step cannot be captured, or None when it can."""
    from .layers import MoE
    shard = getattr(model, "shard", None)
    if shard is not None and shard.size > 1:
        return "tensor parallelism (every rank would have to capture and replay in step)"
    if getattr(model, "state_layers", ()):
        return "recurrent state layers (their state pages have no padding slot)"
    if getattr(model, "accepts_images", False):
        return "image inputs"
    if any(isinstance(m, MoE) for m in model.modules()):
        return "a routed MoE (it picks experts on the host)"
    return None


class DecodeInputs:
    """The static inputs of decode graphs for up to `max_batch` seqs: one
    int64 device buffer holding every field, and its host twin (pinned when
    the device is CUDA).  `fill(step)` writes the host side and `upload()`
    copies it over; views of the device buffer are what the graphs read."""

    def __init__(self, plan: MemoryPlan, gids: tuple[int, ...], max_batch: int, max_model_len: int,
                 device: torch.device) -> None:
        self.plan, self.gids, self.max_batch, self.device = plan, gids, max_batch, device
        self.widths = {g: -(-max_model_len // plan.groups[g].page_tokens) for g in gids}
        shapes = {"input_ids": (max_batch,), "positions": (max_batch,), "query_start": (max_batch + 1,)}
        for g in gids:
            shapes.update({f"slot_pages{g}": (max_batch,), f"slot_offsets{g}": (max_batch,),
                           f"slot_mapping{g}": (max_batch,), f"page_table{g}": (max_batch, self.widths[g]),
                           f"context_lens{g}": (max_batch,)})
        total = sum(torch.Size(s).numel() for s in shapes.values())
        pinned = device.type == "cuda"
        self.host = torch.zeros(total, dtype=torch.long, pin_memory=pinned)
        self.dev = torch.zeros(total, dtype=torch.long, device=device)
        valid = (len(gids), max_batch, max(self.widths.values(), default=1))
        self.host_valid = torch.zeros(valid, dtype=torch.bool, pin_memory=pinned)
        self.dev_valid = torch.zeros(valid, dtype=torch.bool, device=device)
        self._host_views, self.views, at = {}, {}, 0
        for name, shape in shapes.items():
            n = torch.Size(shape).numel()
            self._host_views[name] = self.host[at:at + n].view(shape)
            self.views[name] = self.dev[at:at + n].view(shape)
            at += n
        self._host_views["query_start"].copy_(torch.arange(max_batch + 1))   # one token per seq, always
        self._copied: torch.cuda.Event | None = None

    def fits(self, step: StepPlan) -> bool:
        """True when `step` is a decode step these buffers can hold: at most
        max_batch seqs, each one token without drafts, images or state
        saves, page tables within the static width."""
        return 0 < len(step.seqs) <= self.max_batch and all(
            s.num_tokens == 1 and not s.num_spec and not s.images and not s.encoder_runs
            and not s.state_saves and all(len(s.page_tables[g]) <= self.widths[g] for g in self.gids)
            for s in step.seqs)

    def fill(self, step: StepPlan, bucket: int) -> None:
        """Write `step`'s decode inputs into the host buffers, rows B..bucket-1
        as padding (token 0 at position 0, slot page -1, page table of zeros,
        context 1).  The caller checked `fits(step)`; mutates the host side."""
        if self._copied is not None:
            # the last upload must have left the host buffer; it has, since
            # that step's sampled tokens were read, so this never waits
            self._copied.synchronize()
        h, B, seqs = self._host_views, len(step.seqs), step.seqs
        self._put(h["input_ids"], bucket, [s.token_ids[0] for s in seqs], 0)
        self._put(h["positions"], bucket, [s.start for s in seqs], 0)
        for gi, g in enumerate(self.gids):
            P = self.plan.groups[g].page_tokens
            tables = [s.page_tables[g] for s in seqs]
            pages = [t[s.start // P] for s, t in zip(seqs, tables)]
            self._put(h[f"slot_pages{g}"], bucket, pages, -1)
            self._put(h[f"slot_offsets{g}"], bucket, [s.start % P for s in seqs], 0)
            self._put(h[f"slot_mapping{g}"], bucket, [p * P + s.start % P for p, s in zip(pages, seqs)], -1)
            self._put(h[f"context_lens{g}"], bucket, [s.end for s in seqs], 1)
            table, valid = h[f"page_table{g}"], self.host_valid[gi]
            table[:bucket] = 0
            valid[:bucket] = False
            for i, t in enumerate(tables):
                row = torch.tensor(t, dtype=torch.long)
                table[i, :len(t)] = row.clamp(min=0)
                valid[i, :len(t)] = row != NO_PAGE

    @staticmethod
    def _put(view: torch.Tensor, bucket: int, values: list[int], pad: int) -> None:
        view[:bucket] = pad
        view[:len(values)] = torch.tensor(values, dtype=torch.long)

    def upload(self) -> None:
        """Copy the host buffers to the device (non-blocking from pinned
        memory on CUDA: the host goes on while the copy runs)."""
        cuda = self.device.type == "cuda"
        self.dev.copy_(self.host, non_blocking=cuda)
        self.dev_valid.copy_(self.host_valid, non_blocking=cuda)
        if cuda:
            self._copied = torch.cuda.Event()
            self._copied.record()

    def metadata(self, bucket: int, backend: str) -> AttnMetadata:
        """Attention metadata of a `bucket`-row decode step over the device
        buffers (built once per bucket; the graphs read it by address).
        It has no gather batches: only the Triton path can run it."""
        v, b = self.views, bucket
        groups: list[GroupAttnMetadata | None] = [None] * len(self.plan.groups)
        for gi, g in enumerate(self.gids):
            grp = self.plan.groups[g]
            P = grp.page_tokens
            groups[g] = GroupAttnMetadata(
                g, P, grp.spec.window, grp.spec.chunk, tuple(range(b + 1)), v["query_start"][:b + 1],
                v["positions"][:b], v[f"slot_pages{g}"][:b], v[f"slot_offsets{g}"][:b],
                v[f"slot_mapping{g}"][:b], v[f"page_table{g}"][:b], self.dev_valid[gi, :b, :self.widths[g]],
                v[f"context_lens{g}"][:b], (), grp.spec)
        layer_group = {layer: g.gid for g in self.plan.groups for layer in g.layers}
        return AttnMetadata(tuple(groups), layer_group, v["positions"][:b], backend)


class DecodeGraphs:
    """Decode steps of `model` over `kv_pool`, padded to capture sizes and,
    on CUDA after `capture()`, replayed from CUDA graphs.

    layers: the model's attention layers (plan layer numbers, offset 0).
    Raises ValueError when the model cannot be captured (unsupported_reason).
    """

    def __init__(self, model, kv_pool: KVPool, plan: MemoryPlan, layers: tuple[int, ...],
                 config: CudaGraphConfig) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"CUDA graphs cannot capture {type(model).__name__}: {reason}")
        self.model, self.kv_pool, self.device = model, kv_pool, kv_pool.device
        self.sizes = capture_sizes(config.max_num_seqs)
        gids = tuple(g.gid for g in plan.groups if set(g.layers) & set(layers))
        self.inputs = DecodeInputs(plan, gids, self.sizes[-1], config.max_model_len, self.device)
        self._meta = {b: self.inputs.metadata(b, "triton") for b in self.sizes}
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.runs = 0        # decode steps run through the buffers (replayed or eager)

    def _forward(self, bucket: int) -> torch.Tensor:
        v = self.inputs.views
        with torch.no_grad():
            return self.model(v["input_ids"][:bucket], v["positions"][:bucket], self._meta[bucket],
                              self.kv_pool, None)

    def capture(self) -> None:
        """Capture one graph per size, largest first, all sharing one memory
        pool; each is warmed up once on a side stream first (Triton compiles,
        cuBLAS picks its kernels).  CUDA only; the buffers hold padding while
        capturing, so the pool is never written."""
        if self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream()
        for b in sorted(self.sizes, reverse=True):
            self.inputs.fill(StepPlan(0, ()), b)
            self.inputs.upload()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._forward(b)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = self._forward(b)
            self._graphs[b] = (graph, out)
        torch.cuda.synchronize()

    @property
    def captured(self) -> tuple[int, ...]:
        """The sizes with a captured graph."""
        return tuple(sorted(self._graphs))

    def run(self, step: StepPlan) -> torch.Tensor | None:
        """Logits [B, vocab] of `step`'s seqs in plan order (a fresh tensor,
        in the model's dtype), or None when `step` is not a decode step the
        buffers hold (the caller runs it eagerly).  Replays the bucket's
        graph when captured, else runs the padded forward eagerly; writes
        the step's K/V into the pool."""
        B = len(step.seqs)
        bucket = bucket_for(B, self.sizes)
        if bucket is None or not self.inputs.fits(step):
            return None
        self.inputs.fill(step, bucket)
        self.inputs.upload()
        self.runs += 1
        if bucket in self._graphs:
            graph, out = self._graphs[bucket]
            graph.replay()
        else:
            out = self._forward(bucket)
        return out[:B].clone()
