"""Layer specs: what one layer stores and which tokens it depends on.

A `LayerSpec` is the only description of a layer the memory manager sees.  It
is frozen and hashable; layers with equal specs form one *group*.  Per-token
kinds (full, sliding, chunked, budget, cross, vision) store `bytes_per_token`
bytes for every token they keep; `mamba` stores one fixed-size state per request.
Nothing here imports torch: dtypes are names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

KINDS = ("full", "sliding", "chunked", "budget", "mamba", "cross", "vision")

DTYPE_BYTES = {
    "float32": 4, "fp32": 4,
    "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
    "float8": 1, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1,
}


def dtype_bytes(dtype: str) -> int:
    """Bytes of one element of `dtype`; raises ValueError naming an unknown dtype."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class LayerSpec:
    """What one layer stores.

    kind: one of KINDS.
    num_kv_heads, head_size: K and V heads for the attention kinds
        (full, sliding, chunked, cross); a layer stores K and V.
    window: sliding window length in tokens (a token attends to itself and the
        window-1 tokens before it).
    chunk: chunk length for chunked-local attention.
    budget: tokens a `budget` layer keeps (PyramidKV-style KV compression:
        the layer keeps its `budget` most relevant tokens, overwriting an
        evicted token's slot with a new one).
    conv_state, ssm_state: element shapes of one Mamba layer's two states.
    state_dtype: dtype of the SSM state (often float32 while conv is bf16).
    hidden_size: width of one vision embedding.
    model: tag of the model the layer belongs to ("main" or a draft's name);
        equal specs of different models are different groups.
    """

    kind: str
    dtype: str = "bfloat16"
    num_kv_heads: int = 0
    head_size: int = 0
    window: int = 0
    chunk: int = 0
    budget: int = 0
    conv_state: tuple[int, ...] = ()
    ssm_state: tuple[int, ...] = ()
    state_dtype: str = ""
    hidden_size: int = 0
    model: str = "main"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        dtype_bytes(self.dtype)
        if self.state_dtype:
            dtype_bytes(self.state_dtype)
        if self.kind in ("full", "sliding", "chunked", "budget", "cross"):
            if self.num_kv_heads <= 0 or self.head_size <= 0:
                raise ValueError(f"{self.kind} layer needs num_kv_heads > 0 and head_size > 0")
        if self.kind == "sliding" and self.window <= 0:
            raise ValueError("sliding layer needs window > 0")
        if self.kind == "chunked" and self.chunk <= 0:
            raise ValueError("chunked layer needs chunk > 0")
        if self.kind == "budget" and self.budget <= 0:
            raise ValueError("budget layer needs budget > 0")
        if self.kind == "mamba" and (not self.conv_state or not self.ssm_state):
            raise ValueError("mamba layer needs conv_state and ssm_state shapes")
        if self.kind == "vision" and self.hidden_size <= 0:
            raise ValueError("vision layer needs hidden_size > 0")

    @property
    def per_token(self) -> bool:
        """True when the layer stores state per token (everything but mamba)."""
        return self.kind != "mamba"

    @property
    def bytes_per_token(self) -> int:
        """Bytes this layer stores per kept token (0 for mamba)."""
        if self.kind == "mamba":
            return 0
        if self.kind == "vision":
            return self.hidden_size * dtype_bytes(self.dtype)
        return 2 * self.num_kv_heads * self.head_size * dtype_bytes(self.dtype)

    @property
    def conv_bytes(self) -> int:
        return prod(self.conv_state) * dtype_bytes(self.dtype) if self.kind == "mamba" else 0

    @property
    def ssm_bytes(self) -> int:
        if self.kind != "mamba":
            return 0
        return prod(self.ssm_state) * dtype_bytes(self.state_dtype or self.dtype)

    @property
    def state_bytes(self) -> int:
        """Bytes of one request's state in this layer (mamba only; 0 otherwise)."""
        return self.conv_bytes + self.ssm_bytes

    def unit_bytes(self) -> int:
        """Bytes of one allocation unit: a token, or a mamba state."""
        return self.bytes_per_token if self.per_token else self.state_bytes

    def describe(self) -> str:
        extra = {"sliding": f"(window={self.window})", "chunked": f"(chunk={self.chunk})",
                 "budget": f"(budget={self.budget})"}.get(self.kind, "")
        tag = "" if self.model == "main" else f"[{self.model}]"
        return f"{self.kind}{extra}{tag}"

    def per_rank(self, tp: int) -> "LayerSpec":
        """What one of `tp` tensor-parallel ranks stores of this layer
        (docs/parallel.md): its KV heads (an even split, or one replicated
        head when the ranks outnumber them); a recurrent state split along
        its first dim (Mamba-1 channels, Mamba-2 heads with their B/C
        groups, as the engine shards Jamba and Bamba); vision embeddings
        whole (the tower is replicated).  ValueError when they do not split."""
        if tp == 1:
            return self
        if self.num_kv_heads:
            return replace(self, num_kv_heads=kv_heads_per_rank(self.num_kv_heads, tp))
        if self.conv_state:
            for name in ("conv_state", "ssm_state"):
                if getattr(self, name)[0] % tp:
                    raise ValueError(f"{name} {getattr(self, name)} does not split over tensor_parallel_size={tp}")
            return replace(self, conv_state=(self.conv_state[0] // tp,) + self.conv_state[1:],
                           ssm_state=(self.ssm_state[0] // tp,) + self.ssm_state[1:])
        return self


def kv_heads_per_rank(num_kv_heads: int, tp: int) -> int:
    """KV heads each of `tp` ranks stores: an even split, or one replicated
    head when the ranks outnumber the heads (as vLLM).  ValueError when
    neither divides the other."""
    if not isinstance(tp, int) or tp < 1:
        raise ValueError(f"tensor_parallel_size must be a positive integer, got {tp!r}")
    if num_kv_heads % tp and tp % num_kv_heads:
        raise ValueError(f"num_key_value_heads={num_kv_heads} and tensor_parallel_size={tp}: "
                         "one must divide the other")
    return max(1, num_kv_heads // tp)


def full(num_kv_heads: int, head_size: int, dtype: str = "bfloat16", model: str = "main") -> LayerSpec:
    return LayerSpec("full", dtype, num_kv_heads, head_size, model=model)


def sliding(window: int, num_kv_heads: int, head_size: int, dtype: str = "bfloat16",
            model: str = "main") -> LayerSpec:
    return LayerSpec("sliding", dtype, num_kv_heads, head_size, window=window, model=model)


def chunked(chunk: int, num_kv_heads: int, head_size: int, dtype: str = "bfloat16",
            model: str = "main") -> LayerSpec:
    return LayerSpec("chunked", dtype, num_kv_heads, head_size, chunk=chunk, model=model)


def token_budget(budget: int, num_kv_heads: int, head_size: int, dtype: str = "bfloat16",
                 model: str = "main") -> LayerSpec:
    return LayerSpec("budget", dtype, num_kv_heads, head_size, budget=budget, model=model)


def cross(num_kv_heads: int, head_size: int, dtype: str = "bfloat16", model: str = "main") -> LayerSpec:
    return LayerSpec("cross", dtype, num_kv_heads, head_size, model=model)


def mamba(conv_state: tuple[int, ...], ssm_state: tuple[int, ...], dtype: str = "bfloat16",
          state_dtype: str = "", model: str = "main") -> LayerSpec:
    return LayerSpec("mamba", dtype, conv_state=tuple(conv_state), ssm_state=tuple(ssm_state),
                     state_dtype=state_dtype, model=model)


def vision(hidden_size: int, dtype: str = "bfloat16", model: str = "main") -> LayerSpec:
    return LayerSpec("vision", dtype, hidden_size=hidden_size, model=model)


@dataclass(frozen=True)
class ModelShape:
    """A model as the memory manager sees it: its layer specs in layer order.

    layers[i] is the spec of model layer i (vision embeddings count as one
    pseudo-layer).  `max_context` bounds a request's length; `source` says
    where the shape comes from (a config.json path or a preset's citation).
    `weights_bytes` and `active_params` feed the simulator's cost model;
    `image_tokens_per_image` is what one image expands to, for VLMs.
    """

    name: str
    layers: tuple[LayerSpec, ...]
    max_context: int
    source: str = ""
    weights_bytes: int = 0
    active_params: int = 0
    hidden_size: int = 0
    image_tokens_per_image: int = 0

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError(f"model {self.name!r} has no layers")
        if self.max_context <= 0:
            raise ValueError(f"model {self.name!r}: max_context must be > 0")

    def per_rank(self, tp: int) -> "ModelShape":
        """The shape one of `tp` tensor-parallel ranks plans its pool by:
        every layer's `LayerSpec.per_rank(tp)`.  weights_bytes and
        active_params stay model-wide (the cost model divides them by tp)."""
        return self if tp == 1 else replace(self, layers=tuple(s.per_rank(tp) for s in self.layers))
