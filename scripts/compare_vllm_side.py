"""vLLM's v1 KVCacheManager behind the adapter contract of `compare_replay.run`.

It builds what vLLM's engine would build for the model shape, with no model
and no GPU: one KVCacheSpec per layer from Jenga's LayerSpecs (for hybrid
Mamba models the attention block size is raised and Mamba pages are padded,
as vLLM's `Platform._align_hybrid_block_size` does), KV cache groups from
vLLM's own grouping function, `num_blocks = budget // bytes per block`
(`_get_kv_cache_bytes_per_block`'s rule), and `vllm.v1.request.Request`s that
carry block hashes (sha256, vLLM's default).  Calls follow the v1 scheduler:
`new_step_starts` each step; `get_computed_blocks` then `allocate_slots` with
the hit at admission; `allocate_slots` for running requests; then the step's
`num_computed_tokens` advance and `append_output_token_ids`, which extends the
block hashes; `free` on preemption and on finish.  Mamba "align" mode chunk
ends come from the v1 scheduler's own `_mamba_block_aligned_split`.

Importing this module imports vllm and torch (dtypes only): keep it out of CI.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import torch
from vllm.v1.attention.backends.registry import MambaAttentionBackendEnum
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import get_hash_fn_by_name
from vllm.v1.core.kv_cache_manager import KVCacheManager
from vllm.v1.core.kv_cache_planning import (
    _get_kv_cache_groups_uniform_page_size,
    unify_kv_cache_spec_page_size,
)
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, MambaSpec, SlidingWindowSpec
from vllm.v1.request import Request, RequestStatus

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
KERNEL_BLOCK = 16   # vLLM's default block size and FlashAttention's smallest kernel block


def hybrid_block_size(shape) -> tuple[int, int | None]:
    """(attention block size, padded Mamba page or None): the smallest multiple
    of KERNEL_BLOCK whose attention page holds one Mamba state, as vLLM does."""
    states = [s.state_bytes for s in shape.layers if not s.per_token]
    if not states:
        return KERNEL_BLOCK, None
    per_token = {s.bytes_per_token for s in shape.layers if s.per_token}
    if len(per_token) != 1:
        raise ValueError("vLLM aligns Mamba pages to one attention geometry; this shape has several")
    tok = per_token.pop()
    block = KERNEL_BLOCK * -(-max(states) // (KERNEL_BLOCK * tok))
    return block, block * tok


def _full(spec, block, pad):
    return FullAttentionSpec(block_size=block, num_kv_heads=spec.num_kv_heads,
                             head_size=spec.head_size, dtype=TORCH_DTYPES[spec.dtype])


def _sliding(spec, block, pad):
    return SlidingWindowSpec(block_size=block, num_kv_heads=spec.num_kv_heads, head_size=spec.head_size,
                             dtype=TORCH_DTYPES[spec.dtype], sliding_window=spec.window)


def _mamba(spec, block, pad):
    return MambaSpec(block_size=block, shapes=(spec.conv_state, spec.ssm_state),
                     dtypes=(TORCH_DTYPES[spec.dtype], TORCH_DTYPES[spec.state_dtype or spec.dtype]),
                     page_size_padded=pad, mamba_type=MambaAttentionBackendEnum.MAMBA1,
                     mamba_cache_mode="align")


CONVERT = {"full": _full, "sliding": _sliding, "mamba": _mamba}


def kv_cache_config(shape, budget: int, retention: int | None = 0) -> tuple[KVCacheConfig, int]:
    """vLLM's KVCacheConfig for `shape` in `budget` bytes, and bytes per block.
    retention: `prefix_cache_retention_interval` (vLLM 0.33's CacheConfig
    default 0: sliding-window and Mamba groups keep only semantic
    checkpoints; None: dense)."""
    block, pad = hybrid_block_size(shape)
    specs = {}
    for i, s in enumerate(shape.layers):
        if s.kind not in CONVERT:
            raise ValueError(f"layer kind {s.kind!r} has no vLLM counterpart in this script")
        specs[f"model.layers.{i}"] = CONVERT[s.kind](s, block, pad)
    specs = unify_kv_cache_spec_page_size(specs)
    groups = _get_kv_cache_groups_uniform_page_size(specs)
    block_bytes = max(sum(specs[n].page_size_bytes for n in g.layer_names) for g in groups)
    return KVCacheConfig(num_blocks=budget // block_bytes, kv_cache_tensors=[], kv_cache_groups=groups,
                         prefix_cache_retention_interval=retention), block_bytes


class VllmSide:
    """One vLLM KVCacheManager, driven as the v1 scheduler drives it.  The
    defaults are vLLM 0.33's: `scheduler_reserve_full_isl=True` (a request
    is admitted only when its whole prompt fits), retention interval 0,
    sha256 block hashes.  `name` labels any other setting."""

    def __init__(self, shape, budget: int, *, max_model_len: int, token_budget: int,
                 reserve_full_isl: bool = True, retention: int | None = 0, hash_algo: str = "sha256") -> None:
        self.config, self.block_bytes = kv_cache_config(shape, budget, retention)
        changes = ([] if reserve_full_isl else ["first-chunk gate"]) + (
            [] if retention == 0 else [f"retention {'dense' if retention is None else retention}"]) + (
            [] if hash_algo == "sha256" else [hash_algo])
        self.name = "vllm" + (f" ({', '.join(changes)})" if changes else "")
        sizes = [g.kv_cache_spec.block_size for g in self.config.kv_cache_groups]
        self.block_size = math.lcm(*sizes)
        hash_block = math.gcd(*sizes)
        self.kv = KVCacheManager(self.config, max_model_len=max_model_len, scheduler_block_size=self.block_size,
                                 hash_block_size=hash_block, max_in_flight_tokens=token_budget,
                                 enable_caching=True)
        fn = get_hash_fn_by_name(hash_algo)
        init_none_hash(fn)
        hasher = get_request_block_hasher(hash_block, fn)
        self.hash_seconds = 0.0

        def timed_hasher(req):   # Request calls it at creation and on every appended token
            t0 = time.perf_counter()
            out = hasher(req)
            self.hash_seconds += time.perf_counter() - t0
            return out

        self.hasher = timed_hasher
        self.reserve_full_isl = reserve_full_isl
        self.pool_bytes = (self.config.num_blocks - 1) * self.block_bytes   # block 0 is vLLM's null block
        self._hits: dict[str, object] = {}
        self._split = None
        if any(isinstance(g.kv_cache_spec, MambaSpec) for g in self.config.kv_cache_groups):
            # The attributes Scheduler._mamba_block_aligned_split reads, set as the
            # v1 scheduler sets them without EAGLE, MTP or a KV connector.
            self._split = SimpleNamespace(
                block_size=self.block_size, cache_config=SimpleNamespace(block_size=self.block_size),
                hash_block_size=hash_block, mamba_has_prefill_checkpoint_blocks=False,
                mamba_partial_cache_hit=hash_block < self.block_size and self.kv.coordinator.enable_partial_hash_hits,
                mamba_prefill_checkpoint_alignment=None, mamba_shared_prefix_checkpoint=False,
                max_num_scheduled_tokens=token_budget, num_hash_lookahead_tokens=0,
                scheduler_config=SimpleNamespace(long_prefill_token_threshold=0), use_eagle_block_drop=False)
        self._params = SamplingParams(max_tokens=max_model_len, ignore_eos=True)

    def describe(self) -> str:
        g = self.config.kv_cache_groups
        kinds = ", ".join(f"{type(x.kv_cache_spec).__name__}x{len(x.layer_names)}" for x in g)
        return (f"{len(g)} groups [{kinds}], block {self.block_size} tokens = {self.block_bytes} B, "
                f"{self.config.num_blocks} blocks (1 null)")

    def new_step(self) -> None:
        self.kv.new_step_starts()

    def add(self, r) -> None:
        r.handle = Request(r.trace.req_id, list(r.trace.prompt), self._params, None, arrival_time=0.0,
                           block_hasher=self.hasher)

    def lookup(self, r) -> int:
        req = r.handle
        blocks, n, req.shared_prefix_boundary = self.kv.get_computed_blocks(req)
        self._hits[req.request_id] = blocks
        return n

    def clip(self, r, start: int, n: int, hit: int) -> int:
        if self._split is None or n == 0:
            return n
        return Scheduler._mamba_block_aligned_split(self._split, r.handle, n, hit)

    def admit(self, r, hit: int, n: int, others_running: bool) -> bool:
        req = r.handle
        blocks = self._hits.pop(req.request_id)
        if self.kv.allocate_slots(req, n, num_new_computed_tokens=hit, new_computed_blocks=blocks,
                                  full_sequence_must_fit=self.reserve_full_isl,
                                  has_scheduled_reqs=others_running) is None:
            return False
        req.status, req.num_computed_tokens = RequestStatus.RUNNING, hit
        return True

    def allocate(self, r, n: int) -> bool:
        return self.kv.allocate_slots(r.handle, n) is not None

    def commit(self, r) -> None:
        r.handle.num_computed_tokens = r.computed

    def append(self, r, tok: int) -> None:
        r.handle.append_output_token_ids(tok)

    def preempt(self, r) -> None:
        req = r.handle
        self.kv.free(req)
        req.status, req.num_computed_tokens = RequestStatus.PREEMPTED, 0
        req.num_preemptions += 1

    def finish(self, r) -> None:
        r.handle.status = RequestStatus.FINISHED_LENGTH_CAPPED
        self.kv.free(r.handle)

    def used_bytes(self) -> int:
        pool = self.kv.block_pool
        return (pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()) * self.block_bytes
