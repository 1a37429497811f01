"""ModelShape from a Hugging Face `config.json`: what each layer stores.

`shape_from_config` reads the fields of a config dict (never the weights,
never the network) and returns the model's layer specs in layer order plus
the numbers the simulator needs (weights bytes, active parameters, hidden
size, context length).  Decoder-only families differ only in which layers
slide, which norms and biases they carry, and whether their MLPs are
mixtures of experts; each family is one row of `_FAMILIES`.  Multimodal
families (mllama, llava, llava_onevision, gemma3) wrap a text config and
live in `vlm.py`.

Layer-kind rules follow transformers 5: `layer_types` wins when the config
has it; otherwise gemma2 and gpt_oss alternate sliding/full starting with a
sliding layer 0, gemma3 makes every `sliding_window_pattern`-th layer full,
mistral slides on every layer when `sliding_window` is set, qwen2/qwen3 slide
from `max_window_layers` on when `use_sliding_window` is true, jamba puts
attention at `attn_layer_offset` every `attn_layer_period` layers (Mamba
elsewhere), and llama4_text makes its RoPE layers (`no_rope_layers`)
chunked by `attention_chunk_size` and its NoPE layers full.  A Mamba layer keeps what transformers' cache keeps: a conv state
of (d_inner, d_conv) in the model dtype and an SSM state of (d_inner,
d_state), in `mamba_ssm_cache_dtype` when the config (or the `ssm_dtype`
argument) names one, else the model dtype.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..spec import DTYPE_BYTES, LayerSpec, ModelShape, dtype_bytes
from . import params as P

_TYPE_KINDS = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
               "linear_attention": "mamba", "mamba": "mamba", "cross_attention": "cross"}


@dataclass(frozen=True)
class Body:
    """What a family builder returns: specs, parameters and sizes."""

    layers: tuple[LayerSpec, ...]
    params: P.ParamCount
    hidden_size: int
    max_context: int
    image_tokens_per_image: int = 0


@dataclass(frozen=True)
class Family:
    """How one decoder-only family lays out its layers.

    default_types(cfg): layer_types when the config has none.
    norms: RMSNorms of hidden size per layer; qk_norm: RMSNorm on q and k.
    bias(cfg): (q/k/v bias, o bias, MLP bias).  tied: default of
    tie_word_embeddings.  moe(cfg, i): (experts, top_k) when layer i's MLP is
    a mixture of experts.  expert_bias: router and experts carry biases.
    sinks: learned per-head attention sinks.  mamba2: the mamba layers are
    Mamba-2 mixers (conv over x|B|C, SSM state per head) rather than Mamba-1.
    ffn(cfg, i, hidden): layer i's feed-forward parameters, for families
    whose MLPs are not all of `intermediate_size` (Llama 4); overrides `moe`.
    """

    default_types: Callable[[Mapping], list[str]]
    norms: int = 2
    qk_norm: bool = False
    bias: Callable[[Mapping], tuple[bool, bool, bool]] = lambda c: (False, False, False)
    tied: bool = False
    moe: Callable[[Mapping, int], tuple[int, int] | None] = lambda c, i: None
    expert_bias: bool = False
    sinks: bool = False
    mamba2: bool = False
    ffn: Callable[[Mapping, int, int], P.ParamCount] | None = None


def _alternating(cfg: Mapping) -> list[str]:
    return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(cfg["num_hidden_layers"])]


def _gemma3(cfg: Mapping) -> list[str]:
    period = cfg.get("sliding_window_pattern", 6)
    return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(cfg["num_hidden_layers"])]


def _mistral(cfg: Mapping) -> list[str]:
    kind = "sliding_attention" if cfg.get("sliding_window") else "full_attention"
    return [kind] * cfg["num_hidden_layers"]


def _qwen(cfg: Mapping) -> list[str]:
    slide = cfg.get("use_sliding_window", False) and cfg.get("sliding_window")
    first = cfg.get("max_window_layers", 28)
    return ["sliding_attention" if slide and i >= first else "full_attention" for i in range(cfg["num_hidden_layers"])]


def _jamba(cfg: Mapping) -> list[str]:
    period, offset = cfg.get("attn_layer_period", 8), cfg.get("attn_layer_offset", 4)
    return ["full_attention" if i % period == offset else "mamba" for i in range(cfg["num_hidden_layers"])]


def _bamba(cfg: Mapping) -> list[str]:
    attn = set(cfg.get("attn_layer_indices") or ())
    return ["full_attention" if i in attn else "mamba" for i in range(cfg["num_hidden_layers"])]


def _all_full(cfg: Mapping) -> list[str]:
    return ["full_attention"] * cfg["num_hidden_layers"]


def _jamba_moe(cfg: Mapping, i: int) -> tuple[int, int] | None:
    period, offset = cfg.get("expert_layer_period", 2), cfg.get("expert_layer_offset", 1)
    experts = cfg.get("num_experts", 16)
    return (experts, cfg.get("num_experts_per_tok", 2)) if experts > 1 and i % period == offset else None


def _llama4_types(cfg: Mapping) -> list[str]:
    """transformers' Llama4TextConfig rule: a RoPE layer (no_rope_layers[i]
    = 1; by default all but every no_rope_layer_interval-th) is chunked when
    attention_chunk_size is set, every NoPE layer is global."""
    n = cfg["num_hidden_layers"]
    rope = cfg.get("no_rope_layers") or [int((i + 1) % cfg.get("no_rope_layer_interval", 4) != 0) for i in range(n)]
    chunked = cfg.get("attention_chunk_size", 8192) is not None
    return ["chunked_attention" if rope[i] and chunked else "full_attention" for i in range(n)]


def _llama4_ffn(cfg: Mapping, i: int, hidden: int) -> P.ParamCount:
    """Llama 4: `moe_layers` (default every interleave_moe_layer_step-th
    layer) hold a shared expert plus routed experts of intermediate_size;
    the rest a dense MLP of intermediate_size_mlp."""
    n, step = cfg["num_hidden_layers"], cfg.get("interleave_moe_layer_step", 1)
    moe_layers = cfg.get("moe_layers")
    moe_layers = range(step - 1, n, step) if moe_layers is None else moe_layers
    if i not in moe_layers:
        return P.ParamCount.dense(P.gated_mlp(hidden, cfg.get("intermediate_size_mlp", 16384)))
    inter = require(cfg, "intermediate_size")
    routed = P.moe(hidden, inter, cfg.get("num_local_experts", 16), cfg.get("num_experts_per_tok", 1))
    return routed + P.ParamCount.dense(P.gated_mlp(hidden, inter))


def _llama_bias(cfg: Mapping) -> tuple[bool, bool, bool]:
    b = bool(cfg.get("attention_bias", False))
    return b, b, bool(cfg.get("mlp_bias", False))


_FAMILIES: dict[str, Family] = {
    "llama": Family(_all_full, bias=_llama_bias),
    "mistral": Family(_mistral),
    "ministral": Family(_mistral),
    "qwen2": Family(_qwen, bias=lambda c: (True, False, False)),
    "qwen3": Family(_qwen, qk_norm=True, bias=lambda c: (bool(c.get("attention_bias", False)),) * 2 + (False,)),
    "gemma2": Family(_alternating, norms=4, tied=True, bias=_llama_bias),
    "gemma3_text": Family(_gemma3, norms=4, qk_norm=True, tied=True, bias=_llama_bias),
    "gpt_oss": Family(_alternating, bias=lambda c: (bool(c.get("attention_bias", True)),) * 2 + (False,),
                      moe=lambda c, i: (c.get("num_local_experts", 32), c.get("num_experts_per_tok", 4)),
                      expert_bias=True, sinks=True),
    "jamba": Family(_jamba, moe=_jamba_moe),
    "bamba": Family(_bamba, bias=_llama_bias, mamba2=True),
    # Llama 4's qk-norm is weightless: no parameters
    "llama4_text": Family(_llama4_types, bias=lambda c: (bool(c.get("attention_bias", False)),) * 2 + (False,),
                          ffn=_llama4_ffn),
}


def supported_model_types() -> tuple[str, ...]:
    from .vlm import VLM_FAMILIES
    return tuple(_FAMILIES) + tuple(VLM_FAMILIES)


def shape_from_path(path: str | Path, *, name: str | None = None, dtype: str | None = None) -> ModelShape:
    """Shape of the model whose config is `path` (a json file) or
    `path/config.json` (a folder).  Reads only that file; raises ValueError
    when it is missing or not a json object, and whatever shape_from_config
    raises."""
    p = Path(path)
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise ValueError(f"path {str(path)!r}: no config.json found")
    try:
        cfg = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"path {str(file)!r} is not valid json: {e}") from None
    default_name = p.name if p.is_dir() else p.parent.name or p.stem
    return shape_from_config(cfg, name=name or default_name, dtype=dtype, source=str(file))


def shape_from_config(cfg: Mapping, *, name: str | None = None, dtype: str | None = None,
                      source: str | None = None, ssm_dtype: str | None = None) -> ModelShape:
    """ModelShape of an HF config dict (see module doc for the rules).

    dtype: element dtype of the state and weights; default the config's
    `torch_dtype` / `dtype`, else bfloat16.  ssm_dtype: dtype of Mamba SSM
    states (default: the config's `mamba_ssm_cache_dtype`, else dtype).
    Raises ValueError naming an unknown model_type, a missing field or an
    unknown dtype.  Pure: `cfg` is not modified.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"config must be a dict, got {type(cfg).__name__}")
    model_type = cfg.get("model_type")
    dt = resolve_dtype(dtype, cfg)
    body = build_body(cfg, dt, ssm_dtype)
    return ModelShape(name=name or str(cfg.get("_name_or_path") or model_type), layers=body.layers,
                      max_context=body.max_context, source=source or f"config dict (model_type={model_type})",
                      weights_bytes=body.params.total * dtype_bytes(dt), active_params=body.params.active,
                      hidden_size=body.hidden_size, image_tokens_per_image=body.image_tokens_per_image)


def build_body(cfg: Mapping, dt: str, ssm_dtype: str | None) -> Body:
    """Dispatch on model_type; ValueError naming an unknown one."""
    from .vlm import VLM_FAMILIES

    model_type = cfg.get("model_type")
    if model_type in VLM_FAMILIES:
        return VLM_FAMILIES[model_type](cfg, dt, ssm_dtype)
    if model_type not in _FAMILIES:
        raise ValueError(f"unknown model_type {model_type!r}; supported: {', '.join(supported_model_types())}")
    return text_body(cfg, dt, ssm_dtype)


def resolve_dtype(dtype: str | None, cfg: Mapping) -> str:
    """`dtype`, else the config's torch_dtype / dtype (also in text_config),
    else bfloat16; ValueError naming the field for an unknown name."""
    if dtype is not None:
        return _dtype_name(dtype, "dtype")
    for c in (cfg, cfg.get("text_config") or {}):
        for field in ("torch_dtype", "dtype"):
            if c.get(field):
                return _dtype_name(c[field], field)
    return "bfloat16"


def _dtype_name(value: object, field: str) -> str:
    name = str(value).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ValueError(f"{field}={value!r} is not a known dtype; known: {sorted(DTYPE_BYTES)}")
    return name


def require(cfg: Mapping, field: str) -> int:
    """An int field of the config; ValueError naming it when absent."""
    value = cfg.get(field)
    if value is None:
        raise ValueError(f"config (model_type={cfg.get('model_type')!r}) lacks field {field!r}")
    return value


def layer_types(cfg: Mapping, fam: Family) -> list[str]:
    """Per-layer HF type names: `layer_types` if present, else the family's
    pattern; ValueError on a wrong length."""
    n = require(cfg, "num_hidden_layers")
    types = list(cfg.get("layer_types") or fam.default_types(cfg))
    if len(types) != n:
        raise ValueError(f"layer_types has {len(types)} entries but num_hidden_layers={n}")
    return types


def attn_dims(cfg: Mapping) -> tuple[int, int, int, int]:
    """(hidden, heads, kv_heads, head_dim) with HF's defaults."""
    hidden, heads = require(cfg, "hidden_size"), require(cfg, "num_attention_heads")
    kv = cfg.get("num_key_value_heads") or heads
    return hidden, heads, kv, cfg.get("head_dim") or hidden // heads


def layer_spec(kind_name: str, cfg: Mapping, dt: str, ssm_dtype: str | None, *, mamba2: bool = False) -> LayerSpec:
    """The spec of one layer of HF type `kind_name` (a mamba layer is a
    Mamba-2 mixer when `mamba2`); ValueError if unknown."""
    kind = _TYPE_KINDS.get(kind_name)
    if kind is None:
        raise ValueError(f"layer type {kind_name!r} is not supported; known: {sorted(_TYPE_KINDS)}")
    if kind == "mamba":
        d_inner = cfg.get("mamba_expand", 2) * require(cfg, "hidden_size")
        state_dt = _dtype_name(ssm_dtype, "ssm_dtype") if ssm_dtype else _config_ssm_dtype(cfg, dt)
        conv, ssm = _mamba2_states(cfg) if mamba2 else ((d_inner, cfg.get("mamba_d_conv", 4)),
                                                         (d_inner, cfg.get("mamba_d_state", 16)))
        return LayerSpec("mamba", dt, conv_state=conv, ssm_state=ssm, state_dtype="" if state_dt == dt else state_dt)
    _, _, kv, head_dim = attn_dims(cfg)
    window = require(cfg, "sliding_window") if kind == "sliding" else 0
    if kind == "sliding" and cfg.get("use_bidirectional_attention"):
        window = window // 2 + 1        # transformers' Gemma3 config rewrites it so
    chunk = require(cfg, "attention_chunk_size") if kind == "chunked" else 0
    return LayerSpec(kind, dt, kv, head_dim, window=window, chunk=chunk)


def _config_ssm_dtype(cfg: Mapping, dt: str) -> str:
    value = cfg.get("mamba_ssm_cache_dtype")
    return dt if value in (None, "auto") else _dtype_name(value, "mamba_ssm_cache_dtype")


def text_body(cfg: Mapping, dt: str, ssm_dtype: str | None, *,
              extra: Callable[[int], tuple[LayerSpec, int] | None] | None = None) -> Body:
    """Specs and parameters of a decoder-only family's text model.

    extra(i) may claim layer i for a kind the family table does not know
    (mllama's cross-attention layers), returning its spec and parameters.
    """
    fam = _FAMILIES.get(cfg.get("model_type"))
    if fam is None:
        raise ValueError(f"unknown text model_type {cfg.get('model_type')!r}; supported: {', '.join(_FAMILIES)}")
    hidden, heads, kv, head_dim = attn_dims(cfg)
    qkv_bias, o_bias, mlp_bias = fam.bias(cfg)
    attn = P.attention(hidden, heads, kv, head_dim, qkv_bias=qkv_bias, o_bias=o_bias, qk_norm=fam.qk_norm,
                       sinks=fam.sinks)
    layers, total = [], P.ParamCount(0, 0)
    for i, t in enumerate(layer_types(cfg, fam)):
        claimed = extra(i) if extra else None
        if claimed is not None:
            spec, mixer = claimed
        else:
            spec = layer_spec(t, cfg, dt, ssm_dtype, mamba2=fam.mamba2)
            mamba = _mamba2_params if fam.mamba2 else _mamba_params
            mixer = mamba(cfg) if spec.kind == "mamba" else attn
        layers.append(spec)
        total += P.ParamCount.dense(mixer + fam.norms * hidden) + _ffn(cfg, fam, i, hidden, mlp_bias)
    emb = P.embeddings(require(cfg, "vocab_size"), hidden, bool(cfg.get("tie_word_embeddings", fam.tied)))
    total += P.ParamCount.dense(emb + hidden)
    return Body(tuple(layers), total, hidden, require(cfg, "max_position_embeddings"))


def _ffn(cfg: Mapping, fam: Family, i: int, hidden: int, mlp_bias: bool) -> P.ParamCount:
    if fam.ffn is not None:
        return fam.ffn(cfg, i, hidden)
    inter = require(cfg, "intermediate_size")
    experts = fam.moe(cfg, i)
    if experts is None:
        return P.ParamCount.dense(P.gated_mlp(hidden, inter, mlp_bias))
    return P.moe(hidden, inter, *experts, router_bias=fam.expert_bias, expert_bias=fam.expert_bias)


def _mamba_params(cfg: Mapping) -> int:
    hidden = require(cfg, "hidden_size")
    rank = cfg.get("mamba_dt_rank", "auto")
    rank = math.ceil(hidden / 16) if rank == "auto" else rank
    return P.mamba_mixer(hidden, cfg.get("mamba_expand", 2) * hidden, cfg.get("mamba_d_state", 16),
                         cfg.get("mamba_d_conv", 4), rank, conv_bias=cfg.get("mamba_conv_bias", True),
                         proj_bias=cfg.get("mamba_proj_bias", False))


def _mamba2_dims(cfg: Mapping) -> tuple[int, int, int, int, int]:
    """(d_inner, heads, head_dim, groups, d_state) of a Mamba-2 mixer (Bamba's
    field names and transformers' defaults); ValueError when heads x
    head_dim is not d_inner."""
    inner = cfg.get("mamba_expand", 2) * require(cfg, "hidden_size")
    heads = cfg.get("mamba_n_heads", 128)
    head_dim = cfg.get("mamba_d_head", "auto")
    head_dim = inner // heads if head_dim == "auto" else head_dim
    if heads * head_dim != inner:
        raise ValueError(f"mamba_n_heads={heads} x mamba_d_head={head_dim} != mamba_expand * hidden_size={inner}")
    return inner, heads, head_dim, cfg.get("mamba_n_groups", 1), cfg.get("mamba_d_state", 256)


def _mamba2_states(cfg: Mapping) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """Conv state (d_inner + 2 * groups * d_state, d_conv) over x|B|C, SSM
    state (heads, head_dim, d_state)."""
    inner, heads, head_dim, groups, state = _mamba2_dims(cfg)
    return (inner + 2 * groups * state, cfg.get("mamba_d_conv", 4)), (heads, head_dim, state)


def _mamba2_params(cfg: Mapping) -> int:
    """in_proj (z, x|B|C, dt), depthwise conv, dt_bias, A_log, D, the gated
    norm and out_proj."""
    hidden = require(cfg, "hidden_size")
    inner, heads, _, groups, state = _mamba2_dims(cfg)
    conv_dim, bias = inner + 2 * groups * state, cfg.get("mamba_proj_bias", False)
    n = P.linear(hidden, inner + conv_dim + heads, bias)
    n += conv_dim * cfg.get("mamba_d_conv", 4) + (conv_dim if cfg.get("mamba_conv_bias", True) else 0)
    return n + 3 * heads + inner + P.linear(inner, hidden, bias)
