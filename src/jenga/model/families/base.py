"""The decoder-only causal LM every family is built from.

A family turns its HF config into an `Arch` (what differs between families:
biases, qk-norm, Gemma's (1+w) norms and sandwich norms, embedding scale,
attention scaling, soft-capping, sinks, MoE, per-layer window / chunk /
RoPE) and may swap the MLP; the forward pass is shared.  Module names mirror
the HF checkpoints, so `load_weights` is a name lookup.  Modules are built on
the meta device and materialised, in the model's dtype and device, as their
weights stream in.  Forward: `forward(input_ids, positions, attn_metadata,
kv_pool, rows)` -> logits of the selected rows; attention reads and writes
the pool through `kv_pool.kv_view(layer)` and the layer's group metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..attention import paged_attention
from ..attn_metadata import AttnMetadata, GroupAttnMetadata
from ..kv_pool import KVPool
from ..layers import GatedMLP, RMSNorm, Rope, apply_rope
from ...memory.spec import kv_heads_per_rank
from ..parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, Slice, TPShard, head_ranges, narrow


@dataclass(frozen=True)
class Arch:
    """A family's architecture, normalised from its HF config.

    windows[i] / chunks[i]: layer i's sliding window / local chunk (0: none).
    ropes[i]: layer i's RoPE parameters as sorted (key, value) pairs.
    scale: attention score scaling.  attn_softcap / final_softcap: 0 = off.
    norm_offset 1 means Gemma's x*(1+w) norms; sandwich adds Gemma's norms
    after attention and around the MLP.  num_experts > 0 means an MoE family
    (gpt-oss's `make_mlp`; Llama 4 builds its own per layer).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float
    act: str
    tie_embeddings: bool
    windows: tuple[int, ...]
    chunks: tuple[int, ...]
    ropes: tuple[tuple[tuple[str, object], ...], ...]
    max_position: int
    scale: float
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    norm_offset: float = 0.0
    sandwich: bool = False
    embed_scale: float = 1.0
    attn_softcap: float = 0.0
    final_softcap: float = 0.0
    sinks: bool = False
    num_experts: int = 0
    top_k: int = 0
    swiglu_alpha: float = 0.0
    swiglu_limit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        for name in ("windows", "chunks", "ropes"):
            if len(getattr(self, name)) != self.num_layers:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {self.num_layers} layers")
        if self.num_experts and not 0 < self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")


def hf_config(config):
    """A transformers config object from a config object or a config.json dict."""
    if isinstance(config, dict):
        from transformers import AutoConfig
        d = dict(config)
        if "model_type" not in d:
            raise ValueError("config dict has no model_type")
        return AutoConfig.for_model(d.pop("model_type"), **d)
    return config


# Multimodal checkpoints (Gemma-3, Llama 4) keep the text model under one of these.
TEXT_TOWER_PREFIXES = ("model.language_model.", "language_model.model.")


def text_tower_name(name: str, skip: tuple[str, ...]) -> str | None:
    """A multimodal checkpoint's tensor name as the text model's: None for
    names under `skip` (the vision tower and projector), the text prefixes
    rewritten to `model.`, `language_model.lm_head.` to `lm_head.`."""
    if name.startswith(skip):
        return None
    for prefix in TEXT_TOWER_PREFIXES:
        if name.startswith(prefix):
            return "model." + name[len(prefix):]
    return name.removeprefix("language_model.") if name.startswith("language_model.lm_head.") else name


def layer_scopes(cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(windows, chunks) per layer from HF `layer_types` (all full without)."""
    n = cfg.num_hidden_layers
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * n
    known = {"full_attention", "sliding_attention", "chunked_attention"}
    if len(types) != n or not set(types) <= known:
        raise ValueError(f"layer_types must be {n} entries of {sorted(known)}, got {types}")
    windows = tuple(cfg.sliding_window if t == "sliding_attention" else 0 for t in types)
    chunks = tuple(cfg.attention_chunk_size if t == "chunked_attention" else 0 for t in types)
    return windows, chunks


def rope_per_layer(cfg) -> tuple[tuple[tuple[str, object], ...], ...]:
    """RoPE parameters of each layer; per layer type when the config keys
    them so (Gemma-3), else one dict for all."""
    params = cfg.rope_parameters
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers
    per_type = isinstance(params.get(types[0]), dict)
    return tuple(tuple(sorted((params[t] if per_type else params).items())) for t in types)


def common_arch(cfg, **kw) -> Arch:
    """An Arch from the config fields every family shares; `kw` overrides."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    windows, chunks = layer_scopes(cfg)
    base = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, head_dim=head_dim,
        rms_eps=cfg.rms_norm_eps, act=getattr(cfg, "hidden_act", "silu"),
        tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)), windows=windows, chunks=chunks,
        ropes=rope_per_layer(cfg), max_position=cfg.max_position_embeddings, scale=head_dim ** -0.5)
    base.update(kw)
    return Arch(**base)


KV_SCALES = ("k_scale", "v_scale")   # per-layer scalars of fp8 checkpoints, read into floats


class Attention(nn.Module):
    """Self-attention of layer `idx` over the paged pool: this rank's query
    heads and KV heads (model/parallel.py: head_ranges), o_proj summed over
    the ranks."""

    def __init__(self, a: Arch, idx: int, shard: TPShard = NO_TP) -> None:
        super().__init__()
        D = a.head_dim
        (q0, q1), (k0, k1) = head_ranges(a.num_heads, a.num_kv_heads, shard)
        self.q_proj = ColumnParallelLinear(a.hidden_size, (q0 * D, q1 * D), a.qkv_bias, a.num_heads * D)
        self.k_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), a.qkv_bias, a.num_kv_heads * D)
        self.v_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), a.qkv_bias, a.num_kv_heads * D)
        self.o_proj = RowParallelLinear((q0 * D, q1 * D), a.hidden_size, a.o_bias, a.num_heads * D, shard)
        self.q_norm = RMSNorm(D, a.rms_eps, a.norm_offset) if a.qk_norm else None
        self.k_norm = RMSNorm(D, a.rms_eps, a.norm_offset) if a.qk_norm else None
        self.sinks = nn.Parameter(torch.empty(q1 - q0), requires_grad=False) if a.sinks else None
        self.shard_slices: dict[str, Slice] = {"sinks": (0, q0, q1)} if shard.size > 1 else {}
        self.head_dim, self.scale, self.softcap = D, a.scale, a.attn_softcap
        self.window, self.chunk = a.windows[idx], a.chunks[idx]
        # an fp8 K/V cache stores K / k_scale and V / v_scale (the
        # checkpoint's `self_attn.k_scale` / `v_scale`, else 1.0 as in vLLM)
        self.k_scale = self.v_scale = 1.0

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor], meta: GroupAttnMetadata,
                kv: tuple[torch.Tensor, torch.Tensor], backend: str) -> torch.Tensor:
        T = x.shape[0]
        q = self.q_proj(x).view(T, -1, self.head_dim)
        k = self.k_proj(x).view(T, -1, self.head_dim)
        v = self.v_proj(x).view(T, -1, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, *cos_sin), apply_rope(k, *cos_sin)
        out = paged_attention(q, k, v, kv[0], kv[1], meta, scale=self.scale, window=self.window,
                              chunk=self.chunk, softcap=self.softcap, sinks=self.sinks, backend=backend,
                              k_scale=self.k_scale, v_scale=self.v_scale)
        return self.o_proj(out.reshape(T, -1))


class DecoderLayer(nn.Module):
    """Pre-norm attention + MLP block; `attn` defaults to `Attention(a, idx, shard)`."""

    def __init__(self, a: Arch, idx: int, mlp: nn.Module, attn: nn.Module | None = None,
                 shard: TPShard = NO_TP) -> None:
        super().__init__()
        self.self_attn = attn if attn is not None else Attention(a, idx, shard)
        self.mlp = mlp
        self.input_layernorm = RMSNorm(a.hidden_size, a.rms_eps, a.norm_offset)
        self.post_attention_layernorm = RMSNorm(a.hidden_size, a.rms_eps, a.norm_offset)
        self.sandwich = a.sandwich
        if a.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(a.hidden_size, a.rms_eps, a.norm_offset)
            self.post_feedforward_layernorm = RMSNorm(a.hidden_size, a.rms_eps, a.norm_offset)

    def forward(self, h, cos_sin, meta, kv, backend):
        attn = self.self_attn(self.input_layernorm(h), cos_sin, meta, kv, backend)
        if not self.sandwich:
            h = h + attn
            return h + self.mlp(self.post_attention_layernorm(h))
        # Gemma: post_attention_layernorm normalises the attention output
        h = h + self.post_attention_layernorm(attn)
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class DecoderLM(nn.Module):
    """A causal LM built from an HF config (object or config.json dict).

    Subclasses set `model_types` and implement `arch_from_config`; they
    override `make_mlp` (or `make_layer`, for a per-layer attention or MLP)
    or `map_name` where their checkpoints differ.
    shard: this copy's tensor-parallel rank (model/parallel.py); embeddings
    are replicated, attention and MLP sharded, and only rank 0 has the LM
    head (it alone samples).  `tensor_parallel` says whether a family
    takes a shard of size > 1.
    """

    model_types: tuple[str, ...] = ()
    tensor_parallel = True

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        raise NotImplementedError

    def __init__(self, config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 shard: TPShard = NO_TP) -> None:
        super().__init__()
        if shard.size > 1 and not self.tensor_parallel:
            raise ValueError(f"{type(self).__name__} does not support tensor_parallel_size > 1 yet")
        self.config = hf_config(config)
        a = self.arch = self.arch_from_config(self.config)
        self.dtype, self.device, self.shard = dtype, torch.device(device), shard
        with torch.device("meta"):
            self.model = nn.Module()
            self.model.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
            self.model.layers = nn.ModuleList(self.make_layer(a, i) for i in range(a.num_layers))
            self.model.norm = RMSNorm(a.hidden_size, a.rms_eps, a.norm_offset)
            # ranks other than 0 never compute logits (rank 0 samples)
            self.lm_head = nn.Linear(a.hidden_size, a.vocab_size, bias=False) if shard.driver else None
        self.requires_grad_(False)
        keys = sorted(set(a.ropes), key=str)
        self._ropes = [Rope(a.head_dim, dict(k), a.max_position) for k in keys]
        self._rope_of = [keys.index(r) for r in a.ropes]

    def make_layer(self, a: Arch, idx: int) -> nn.Module:
        """Decoder layer `idx` (built on the meta device)."""
        return DecoderLayer(a, idx, self.make_mlp(a), shard=self.shard)

    def make_mlp(self, a: Arch) -> nn.Module:
        return GatedMLP(a.hidden_size, a.intermediate_size, a.act, a.mlp_bias, self.shard)

    @property
    def attn_layers(self) -> tuple[int, ...]:
        """Model layer indices whose state is attention K/V in the pool."""
        return tuple(range(self.arch.num_layers))

    def layer_kv_shapes(self) -> dict[int, tuple[int, int, int, int]]:
        """Per attention layer: (num_kv_heads this rank stores, head_dim, window, chunk)."""
        a = self.arch
        heads = kv_heads_per_rank(a.num_kv_heads, self.shard.size)
        return {i: (heads, a.head_dim, a.windows[i], a.chunks[i]) for i in self.attn_layers}

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn_metadata: AttnMetadata,
                kv_pool: KVPool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [len(rows), vocab] (all T rows when rows is None) for the
        step's tokens input_ids [T] at positions [T]; writes their K/V into
        the pool.  Raises ValueError when a layer's metadata is missing."""
        return self.decode(self.model.embed_tokens(input_ids), positions, attn_metadata, kv_pool, rows)

    def decode(self, h: torch.Tensor, positions: torch.Tensor, attn_metadata: AttnMetadata,
               kv_pool: KVPool, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder from input embeddings h [T, hidden] on: embedding
        scale, layers, final norm, lm head (and soft-cap); as forward.  A
        tensor-parallel rank other than 0 has no LM head and returns the
        selected rows' hidden states instead (nobody reads them)."""
        if self.arch.embed_scale != 1.0:
            # HF casts the scale to the weight dtype first (sqrt(3072) -> 55.5 in bf16)
            h = h * torch.tensor(self.arch.embed_scale, dtype=h.dtype)
        cos_sin = [r.cos_sin(positions, h.dtype) for r in self._ropes]
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cos_sin[self._rope_of[i]], attn_metadata.for_layer(i), kv_pool.kv_view(i),
                      attn_metadata.backend)
        if rows is not None:
            h = h[rows]
        if self.lm_head is None:
            return h
        logits = self.lm_head(self.model.norm(h))
        if self.arch.final_softcap:
            logits = torch.tanh(logits / self.arch.final_softcap) * self.arch.final_softcap
        return logits

    # -- weights ---------------------------------------------------------
    def map_name(self, name: str) -> str | None:
        """Checkpoint name -> parameter name; None to skip the tensor."""
        if name.endswith("rotary_emb.inv_freq") or name == "lm_head.weight" and \
                (self.arch.tie_embeddings or self.lm_head is None):
            return None
        return name

    def _param_slot(self, target: str):
        """(module, attribute) of parameter `target`, module None if absent."""
        mod_name, _, attr = target.rpartition(".")
        try:
            return self.get_submodule(mod_name), attr
        except AttributeError:
            return None, attr

    def weight_slice(self, name: str) -> Slice | None:
        """The (dim, start, stop) range of checkpoint tensor `name` that
        this rank holds; None for the whole tensor."""
        target = self.map_name(name)
        if target is None:
            return None
        mod, attr = self._param_slot(target)
        return getattr(mod, "shard_slices", {}).get(attr)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Fill every parameter from (name, tensor) pairs, cast to the
        model's dtype and device; ties lm_head to the embedding when the
        config says so.  A tensor-parallel rank takes its range of a full
        tensor (or the range itself, as the loader reads it).  Raises
        ValueError on an unknown name, a shape mismatch, or parameters left
        unloaded."""
        for name, tensor in weights:
            target = self.map_name(name)
            if target is None:
                continue
            mod, attr = self._param_slot(target)
            if attr in KV_SCALES and isinstance(getattr(mod, attr, None), float):
                setattr(mod, attr, float(tensor.float().reshape(-1)[0]))   # an fp8 checkpoint's K/V scale
                continue
            old = getattr(mod, "_parameters", {}).get(attr)
            if old is None:
                raise ValueError(f"unexpected weight {name!r} in checkpoint")
            where = getattr(mod, "shard_slices", {}).get(attr)
            if where is not None and old.shape != tensor.shape:
                tensor = narrow(tensor, where)
            if old.shape != tensor.shape:
                raise ValueError(f"weight {name!r}: checkpoint shape {tuple(tensor.shape)}, "
                                 f"model expects {tuple(old.shape)}")
            mod._parameters[attr] = nn.Parameter(tensor.to(self.device, self.dtype), requires_grad=False)
        if self.arch.tie_embeddings and self.lm_head is not None:
            self.lm_head.weight = self.model.embed_tokens.weight
        missing = [n for n, p in self.named_parameters() if p.is_meta]
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[:4]}")
