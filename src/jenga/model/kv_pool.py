"""KVPool: the one flat byte tensor behind every group, and its typed views.

The pool is `plan.num_large_pages * plan.large_page_bytes` bytes of uint8,
laid out page-first (docs/model.md).  Group g sees the whole buffer as
`plan.num_small_pages(g)` small pages of `small_page_bytes`, so page id s is
row s of that view.  Inside a small page, layer j of the group starts at
`j * layer_page_bytes`; an attention layer page holds K then V, each
`[page_tokens, num_kv_heads, head_size]`, so `kv_view` returns strided views
`[num_pages, page_tokens, kv_heads, head_size]` whose page stride is the
small page.  A mamba layer page holds the conv state then the SSM state; a
vision page holds `page_tokens` embeddings.  Views never copy: they share the
buffer's storage, which is what lets every group draw from one pool.

dtypes: the plan sizes pages from each spec's dtype.  The engine builds the
plan with specs in its compute dtype (float32 on CPU, so `spec.dtype` is
"float32"); `dtype_override` replaces the element dtype of KV, conv states
and embeddings (SSM states keep `state_dtype` when set) and must fit the
plan's layer page, or ValueError is raised.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..memory.plan import Group, MemoryPlan
from ..memory.spec import LayerSpec
from ..sched.step import PageCopy

TORCH_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float8": torch.float8_e4m3fn, "fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "int8": torch.int8,
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a spec dtype name; ValueError naming an unknown one."""
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; known: {sorted(TORCH_DTYPES)}") from None


def _typed(raw: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """Reinterpret a [pages, bytes] uint8 slice as `dtype` without copying."""
    size = torch.empty((), dtype=dtype).element_size()
    if raw.stride(0) % size or raw.storage_offset() % size or raw.shape[1] % size:
        raise ValueError(f"{what}: byte offsets are not aligned to {dtype} ({size} B)")
    return raw.view(dtype)


class KVPool:
    """The flat pool for one MemoryPlan.

    Raises ValueError when a layer index appears in two groups or a layer's
    state does not fit its layer page in the chosen dtype.
    """

    def __init__(self, plan: MemoryPlan, device: str | torch.device = "cpu",
                 dtype_override: torch.dtype | None = None) -> None:
        self.plan = plan
        self.device = torch.device(device)
        self.dtype_override = dtype_override
        # Not zeroed: no reader depends on a page's old bytes (attention
        # reads only written slots or zeroes stale ones in its gather, a
        # fresh Mamba state page is in the step's zeros), so start-up
        # touches no memory and the OS maps pages as they are first written.
        self.buffer = torch.empty(plan.pool_bytes, dtype=torch.uint8, device=self.device)
        self._pages = [self.buffer.view(plan.num_small_pages(g.gid), g.small_page_bytes)
                       for g in plan.groups]
        self._where: dict[int, tuple[int, int]] = {}
        for g in plan.groups:
            for j, layer in enumerate(g.layers):
                if layer in self._where:
                    raise ValueError(f"layer {layer} appears in groups {self._where[layer][0]} and {g.gid}")
                self._where[layer] = (g.gid, j)
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def with_layer_offset(self, offset: int) -> KVPool:
        """This pool as seen by a second model whose layer i is plan layer
        `offset + i` (a speculative draft placed after the target's layers):
        the same buffer and pages, layer lookups shifted, plan layers below
        `offset` hidden.  Built field by field, never copied, so no cache
        keyed by plan layer leaks into the shifted view.  ValueError for a
        negative offset."""
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset!r}")
        view = KVPool.__new__(KVPool)
        view.plan, view.device, view.dtype_override = self.plan, self.device, self.dtype_override
        view.buffer, view._pages = self.buffer, self._pages
        view._where = {layer - offset: w for layer, w in self._where.items() if layer >= offset}
        view._kv = {}
        return view

    # -- lookups ---------------------------------------------------------
    def group_of(self, layer_idx: int) -> int:
        """The gid holding model layer `layer_idx`; ValueError if none does."""
        return self._locate(layer_idx)[0].gid

    def _locate(self, layer_idx: int) -> tuple[Group, int]:
        try:
            gid, j = self._where[layer_idx]
        except KeyError:
            raise ValueError(f"layer_idx {layer_idx} is in no group of the plan") from None
        return self.plan.groups[gid], j

    def dtype_of(self, spec: LayerSpec) -> torch.dtype:
        """Element dtype of KV / conv state / embeddings for `spec`."""
        return self.dtype_override or torch_dtype(spec.dtype)

    def _layer_bytes(self, layer_idx: int, need: int) -> tuple[Group, torch.Tensor]:
        """[num_pages, need] uint8 view of layer `layer_idx`'s part of each page."""
        g, j = self._locate(layer_idx)
        if need > g.layer_page_bytes:
            raise ValueError(f"layer {layer_idx}: needs {need} B per page in the pool dtype but the plan's "
                             f"layer page holds {g.layer_page_bytes} B (build the plan with this dtype)")
        off = j * g.layer_page_bytes
        return g, self._pages[g.gid][:, off:off + need]

    # -- views -----------------------------------------------------------
    def kv_view(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k_cache, v_cache) of an attention layer, each
        [num_pages, page_tokens, num_kv_heads, head_size], sharing the pool's
        storage; cached, so repeated calls return the same views."""
        if layer_idx in self._kv:
            return self._kv[layer_idx]
        g, _ = self._locate(layer_idx)
        s = g.spec
        if s.num_kv_heads <= 0:
            raise ValueError(f"layer {layer_idx} ({s.describe()}) stores no K/V")
        dtype = self.dtype_of(s)
        elems = g.page_tokens * s.num_kv_heads * s.head_size
        _, raw = self._layer_bytes(layer_idx, 2 * elems * dtype.itemsize)
        kv = _typed(raw, dtype, f"layer {layer_idx}").view(-1, 2, g.page_tokens, s.num_kv_heads, s.head_size)
        self._kv[layer_idx] = (kv[:, 0], kv[:, 1])
        return self._kv[layer_idx]

    def state_view(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(conv, ssm) states of a mamba layer: [num_pages, *conv_state] and
        [num_pages, *ssm_state]; page id s holds one request's state."""
        g, _ = self._locate(layer_idx)
        s = g.spec
        if not s.conv_state:
            raise ValueError(f"layer {layer_idx} ({s.describe()}) holds no recurrent state")
        conv_dt = self.dtype_of(s)
        ssm_dt = torch_dtype(s.state_dtype) if s.state_dtype else conv_dt
        conv_n = torch.Size(s.conv_state).numel()
        ssm_n = torch.Size(s.ssm_state).numel()
        conv_b = conv_n * conv_dt.itemsize
        _, raw = self._layer_bytes(layer_idx, conv_b + ssm_n * ssm_dt.itemsize)
        conv = _typed(raw[:, :conv_b], conv_dt, f"layer {layer_idx} conv").view(-1, *s.conv_state)
        ssm = _typed(raw[:, conv_b:], ssm_dt, f"layer {layer_idx} ssm").view(-1, *s.ssm_state)
        return conv, ssm

    def embed_view(self, gid: int) -> torch.Tensor:
        """Vision embeddings of group `gid`: [num_pages, page_tokens, hidden_size]."""
        if not 0 <= gid < len(self.plan.groups):
            raise ValueError(f"gid {gid} out of range [0, {len(self.plan.groups)})")
        g = self.plan.groups[gid]
        if g.spec.hidden_size <= 0 or len(g.layers) != 1:
            raise ValueError(f"group {gid} ({g.spec.describe()}) is not a single vision-embedding layer")
        dtype = self.dtype_of(g.spec)
        _, raw = self._layer_bytes(g.layers[0], g.page_tokens * g.spec.hidden_size * dtype.itemsize)
        return _typed(raw, dtype, f"group {gid}").view(-1, g.page_tokens, g.spec.hidden_size)

    def page_bytes(self, gid: int) -> torch.Tensor:
        """Group `gid`'s raw view: [num_small_pages, small_page_bytes] uint8."""
        return self._pages[gid]

    # -- StepPlan operations ----------------------------------------------
    def _check_page(self, gid: int, page: int) -> None:
        if not 0 <= gid < len(self._pages):
            raise ValueError(f"gid {gid} out of range [0, {len(self._pages)})")
        if not 0 <= page < self._pages[gid].shape[0]:
            raise ValueError(f"page {page} out of range for group {gid} ({self._pages[gid].shape[0]} pages)")

    def apply_copies(self, copies: Iterable[PageCopy]) -> None:
        """Copy whole small pages, in order (a later copy sees earlier ones);
        mutates the pool."""
        for gid, src, dst in copies:
            self._check_page(gid, src)
            self._check_page(gid, dst)
            self._pages[gid][dst].copy_(self._pages[gid][src])

    def apply_zeros(self, zeros: Iterable[tuple[int, int]]) -> None:
        """Zero whole small pages given as (gid, page); mutates the pool."""
        for gid, page in zeros:
            self._check_page(gid, page)
            self._pages[gid][page].zero_()
