"""EngineConfig: every knob of the real engine, frozen and validated.

The CLI, `LLM(**kwargs)` and the server build one of these; `LLMEngine`
resolves the "auto" values (device, dtype, KV budget, context length) when
it starts, because they depend on the machine and on the model's config.
Names follow vLLM where vLLM has the knob.  Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..memory.kv_dtype import KVDtypeRule
from ..memory.plan import ALLOCATORS
from ..sched.config import SchedulerConfig

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineConfig:
    """Configuration of one LLMEngine.

    model: a local Hugging Face folder; None means the bundled SmolLM2-135M
        (converted once from its GGUF, see model/gguf_convert.py).
    allocator: memory manager flavour, one of memory.plan.ALLOCATORS.
    kv_cache_memory: bytes of the KV pool; None means, on CPU, room for two
        full-context requests within a quarter of the available memory
        (engine/sizing.py) and, on GPU, `gpu_memory_utilization` of the free
        memory left after loading the weights.
    page_tokens: tokens per small page of the attention groups.
    max_model_len: context limit; None means the model's own, lowered to
        the longest request the KV pool holds (a set value the pool cannot
        hold is a ValueError).
    device: "cpu", "cuda" (optionally "cuda:N") or "auto" (cuda if present).
    dtype: compute dtype; "auto" is float32 on CPU (bf16 matmuls are very
        slow on AVX2 CPUs) and bfloat16 on GPU.
    seed: seeds the sampler for requests without their own seed.
    cpu_threads: torch intra-op threads on CPU (process-wide: torch has
        one setting); None leaves torch's default.  One thread is often
        faster for small decode batches, and far faster on a busy machine.
    speculative_model: a local HF folder of a draft model sharing the
        target's vocabulary; its KV lives in the same pool (docs/speculative.md).
    num_speculative_tokens: draft tokens verified per decode step (k); must
        be >= 1 with a speculative_model and 0 without one.
    Raises ValueError naming the field on a bad value.
    max_waiting: most requests queued; beyond it add_request raises
        QueueFull (the server answers 503 with Retry-After).
    enforce_eager: run every step eagerly; False captures CUDA graphs of
        decode steps (one per batch-size bucket up to max_num_seqs) on a
        CUDA device with triton, for models that allow it (docs/model.md).
    mamba_checkpoint_interval: tokens between cached Mamba-state
        checkpoints; None = auto from the plan (one per the tokens whose
        attention K/V costs as much as a state, at least 512; see
        memory/checkpoint_interval.py).
    tensor_parallel_size: ranks the model is sharded over (docs/parallel.md):
        the engine spawns size - 1 worker processes on this node (or joins
        those torchrun started); kv_cache_memory is then per rank.
    distributed_timeout_s: with tensor parallelism, how long a step may
        wait on another rank before the engine is declared dead.
    kv_cache_dtype: storage dtype of K/V: "auto" (the compute dtype),
        "fp8" (= fp8_e4m3, vLLM's), "fp8_e5m2", or per layer kind, e.g.
        "full=fp8,sliding=auto"; Mamba states keep theirs unless named
        (memory/kv_dtype.py).  fp8 K/V is scaled by the checkpoint's
        per-layer k_scale / v_scale, else 1.0, and attended in the compute dtype.
    """

    model: str | Path | None = None
    allocator: str = "jenga"
    kv_cache_memory: int | None = None
    gpu_memory_utilization: float = 0.9
    page_tokens: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    max_model_len: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    # cli_type: the option type for a CLI built from the fields (a None default cannot tell it)
    mamba_checkpoint_interval: int | None = field(default=None, metadata={"cli_type": int, "cli_default": "auto"})
    cpu_threads: int | None = None
    speculative_model: str | Path | None = None
    num_speculative_tokens: int = 0
    max_waiting: int = 100_000
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    distributed_timeout_s: float = 300.0
    kv_cache_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.model is not None and not str(self.model):
            raise ValueError("model must be a folder path or None")
        if self.allocator not in ALLOCATORS:
            raise ValueError(f"allocator must be one of {ALLOCATORS}, got {self.allocator!r}")
        if self.kv_cache_memory is not None and not _positive_int(self.kv_cache_memory):
            raise ValueError(f"kv_cache_memory must be a positive number of bytes or None, "
                             f"got {self.kv_cache_memory!r}")
        if not isinstance(self.gpu_memory_utilization, (int, float)) or \
                not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        for name in ("page_tokens", "max_num_seqs", "max_num_batched_tokens", "max_waiting",
                     "tensor_parallel_size"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.mamba_checkpoint_interval is not None and not _positive_int(self.mamba_checkpoint_interval):
            raise ValueError(f"mamba_checkpoint_interval must be a positive integer or None (auto), "
                             f"got {self.mamba_checkpoint_interval!r}")
        if self.max_model_len is not None and (not _positive_int(self.max_model_len) or self.max_model_len < 2):
            raise ValueError(f"max_model_len must be an integer >= 2 or None, got {self.max_model_len!r}")
        if self.cpu_threads is not None and not _positive_int(self.cpu_threads):
            raise ValueError(f"cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES or (":" in self.device and not self.device.startswith("cuda:")):
            raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("enable_prefix_caching", "enable_chunked_prefill", "enforce_eager"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.distributed_timeout_s, (int, float)) or isinstance(self.distributed_timeout_s, bool) \
                or not self.distributed_timeout_s > 0:
            raise ValueError(f"distributed_timeout_s must be a positive number of seconds, "
                             f"got {self.distributed_timeout_s!r}")
        self._check_speculative()
        if self.tensor_parallel_size > 1 and self.speculative_model is not None:
            raise ValueError("tensor_parallel_size > 1 does not support a speculative_model yet")
        KVDtypeRule.parse(self.kv_cache_dtype)   # ValueError naming kv_cache_dtype

    def _check_speculative(self) -> None:
        k, draft = self.num_speculative_tokens, self.speculative_model
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= 16:
            raise ValueError(f"num_speculative_tokens must be an integer in [0, 16], got {k!r}")
        if draft is not None and not str(draft):
            raise ValueError("speculative_model must be a folder path or None")
        if draft is not None and k == 0:
            raise ValueError("num_speculative_tokens must be >= 1 when speculative_model is set")
        if draft is None and k:
            raise ValueError(f"num_speculative_tokens={k} needs a speculative_model (the draft that proposes)")

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's share of this config."""
        return SchedulerConfig(max_num_batched_tokens=self.max_num_batched_tokens,
                               max_num_seqs=self.max_num_seqs,
                               enable_chunked_prefill=self.enable_chunked_prefill,
                               enable_prefix_caching=self.enable_prefix_caching,
                               mamba_checkpoint_interval=self.mamba_checkpoint_interval,
                               num_speculative_tokens=self.num_speculative_tokens,
                               max_waiting=self.max_waiting)


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
