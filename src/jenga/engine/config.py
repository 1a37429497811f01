"""EngineConfig: every knob of the real engine, frozen and validated.

The CLI, `LLM(**kwargs)` and the server build one of these; `LLMEngine`
resolves the "auto" values (device, dtype, KV budget, context length) when
it starts, because they depend on the machine and on the model's config.
Names follow vLLM where vLLM has the knob.  Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..memory.kv_dtype import KVDtypeRule
from ..memory.plan import ALLOCATORS
from ..sched.config import SchedulerConfig

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineConfig(SchedulerConfig):
    """Configuration of one LLMEngine: the scheduler's knobs (inherited
    from SchedulerConfig, with its defaults and checks) plus these.

    model: a local Hugging Face folder, or a repo id found in the local
        Hugging Face cache (never downloaded); None means the bundled
        SmolLM2-135M (converted once from its GGUF, see model/gguf_convert.py).
    tokenizer: folder or cached repo id of the tokenizer (default: the model's).
    skip_tokenizer_init: load no tokenizer: prompts must be token ids and
        outputs carry token ids with empty text.
    allocator: memory manager flavour, one of memory.plan.ALLOCATORS.
    kv_cache_memory: bytes of the KV pool; None means, on CPU, room for two
        full-context requests within a quarter of the available memory
        (engine/sizing.py) and, on GPU, `gpu_memory_utilization` of the free
        memory left after loading the weights.
    gpu_memory_utilization: share of the GPU's memory the engine may fill
        (weights, activations and the KV pool), in (0, 1].
    page_tokens: tokens per small page of the attention groups (vLLM's
        block_size).
    max_model_len: context limit (prompt plus output); None means the model's own, lowered to
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
        num_speculative_tokens (draft tokens verified per decode step) must
        then be >= 1, and 0 without one.
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
    enforce_eager: run every step eagerly; False captures CUDA graphs of
        decode steps (one per batch-size bucket up to max_num_seqs) on a
        CUDA device with triton, for models that allow it (docs/model.md).
    generation_config: where default sampling parameters come from: "auto"
        (the model folder's generation_config.json), "vllm" (none: vLLM's
        defaults) or a folder holding a generation_config.json.
    chat_template: a chat template (Jinja text, or a file holding it) used
        instead of the tokenizer's.
    """

    model: str | Path | None = None
    tokenizer: str | Path | None = field(default=None, metadata={"cli_type": str, "cli_default": "the model's"})
    skip_tokenizer_init: bool = False
    allocator: str = "jenga"
    kv_cache_memory: int | None = field(default=None, metadata={"cli_type": "bytes", "cli_default": "auto",
                                                               "vllm": "kv_cache_memory_bytes"})
    gpu_memory_utilization: float = 0.9
    page_tokens: int = field(default=16, metadata={"vllm": "block_size"})
    max_model_len: int | None = field(default=None, metadata={"cli_type": int, "cli_default": "the model's"})
    device: str = "auto"
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    seed: int = 0
    cpu_threads: int | None = field(default=None, metadata={"cli_type": int, "cli_default": "torch's"})
    speculative_model: str | Path | None = field(default=None, metadata={"cli_type": str, "cli_default": "none"})
    tensor_parallel_size: int = 1
    distributed_timeout_s: float = 300.0
    enforce_eager: bool = False
    generation_config: str = "auto"
    chat_template: str | None = field(default=None, metadata={"cli_type": str, "cli_default": "the tokenizer's"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("model", "tokenizer", "speculative_model"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (str, Path)) or not str(v)):
                raise ValueError(f"{name} must be a folder path, a cached Hugging Face repo id or None, got {v!r}")
        if self.allocator not in ALLOCATORS:
            raise ValueError(f"allocator must be one of {ALLOCATORS}, got {self.allocator!r}")
        if self.kv_cache_memory is not None and not _positive_int(self.kv_cache_memory):
            raise ValueError(f"kv_cache_memory must be a positive number of bytes or None, "
                             f"got {self.kv_cache_memory!r}")
        if not isinstance(self.gpu_memory_utilization, (int, float)) or \
                isinstance(self.gpu_memory_utilization, bool) or not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        if not _positive_int(self.page_tokens):
            raise ValueError(f"page_tokens must be a positive integer, got {self.page_tokens!r}")
        if self.max_model_len is not None and (not _positive_int(self.max_model_len) or self.max_model_len < 2):
            raise ValueError(f"max_model_len must be an integer >= 2 or None, got {self.max_model_len!r}")
        if self.cpu_threads is not None and not _positive_int(self.cpu_threads):
            raise ValueError(f"cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in DEVICES or \
                (":" in self.device and not self.device.startswith("cuda:")):
            raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("skip_tokenizer_init", "enforce_eager"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not _positive_int(self.tensor_parallel_size):
            raise ValueError(f"tensor_parallel_size must be a positive integer, got {self.tensor_parallel_size!r}")
        if not isinstance(self.distributed_timeout_s, (int, float)) or isinstance(self.distributed_timeout_s, bool) \
                or not self.distributed_timeout_s > 0:
            raise ValueError(f"distributed_timeout_s must be a positive number of seconds, "
                             f"got {self.distributed_timeout_s!r}")
        if self.tensor_parallel_size > 1 and self.speculative_model is not None:
            raise ValueError("tensor_parallel_size > 1 does not support a speculative_model yet")
        KVDtypeRule.parse(self.kv_cache_dtype)   # ValueError naming kv_cache_dtype
        if not isinstance(self.generation_config, str) or not self.generation_config:
            raise ValueError(f"generation_config must be 'auto', 'vllm' or a folder, got {self.generation_config!r}")
        if self.chat_template is not None and (not isinstance(self.chat_template, str) or not self.chat_template):
            raise ValueError("chat_template must be a non-empty template or file path, or None")
        self._check_speculative()

    def _check_speculative(self) -> None:
        k, draft = self.num_speculative_tokens, self.speculative_model
        if draft is not None and k == 0:
            raise ValueError("num_speculative_tokens must be >= 1 when speculative_model is set")
        if draft is None and k:
            raise ValueError(f"num_speculative_tokens={k} needs a speculative_model (the draft that proposes)")

    def scheduler_config(self) -> SchedulerConfig:
        """The scheduler's share of this config (its own fields, unchanged)."""
        return SchedulerConfig(**{f.name: getattr(self, f.name) for f in fields(SchedulerConfig)})


def _positive_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
