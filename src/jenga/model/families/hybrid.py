"""Hybrid decoders: layers that are either attention or a Mamba mixer.

Jamba and Bamba share the layer shape `h += mixer(input_layernorm(h));
h += feed_forward(pre_ff_layernorm(h))`, a `final_layernorm`, and HF module
names (`self_attn` or `mamba`, `feed_forward`).  A family subclasses
`HybridLM` and says which layers attend, how its Mamba mixer and its FFN are
built, whether attention rotates (Bamba: RoPE on part of each head; Jamba:
no positional encoding), and the conv / SSM state shapes of its mixers.

State: an attention layer's K/V go to its group's pages through
`paged_attention`; a Mamba layer's conv and SSM states live in the one
running-state page its request holds in the layer's mamba group
(`KVPool.state_view`, `StateMetadata`).  `run_conv` and `write_states`
are the page plumbing both mixers share: gather the states of a batch by
page id, continue them, scatter the final states back and write the
checkpoint states the step's `state_saves` ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..attention import paged_attention
from ..attn_metadata import AttnMetadata
from ..kv_pool import KVPool
from ..layers import RMSNorm, Rope, apply_rope
from ..mamba_ops import causal_conv1d, conv_state_after
from ...memory.spec import kv_heads_per_rank
from ..parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, TPShard, head_ranges
from ..state_metadata import GroupStateMetadata, StateBatch, StateMetadata
from .base import Arch, DecoderLM, hf_config


@dataclass(frozen=True)
class StepInputs:
    """What a mixer may read in one forward: both metadata, the pool, and
    the rotary cos/sin of the step's positions (None without RoPE)."""

    attn: AttnMetadata
    states: StateMetadata | None
    pool: KVPool
    cos_sin: tuple[torch.Tensor, torch.Tensor] | None


def run_conv(x: torch.Tensor, meta: GroupStateMetadata, conv: torch.Tensor, weight: torch.Tensor,
             bias: torch.Tensor | None, act: str) -> torch.Tensor:
    """Causal depthwise conv of the step's rows x [T, C], each seq continuing
    from its conv state in `conv` [pages, C, K]; writes the seqs' new conv
    states and the requested checkpoint states into `conv` (the pool).
    Returns [T, C]."""
    out = torch.empty_like(x)
    K = conv.shape[-1]
    for b in meta.batches:
        seq = x[b.rows].transpose(1, 2)                                # [B, C, L]
        y, window = causal_conv1d(seq, conv[b.pages], weight, bias, act)
        conv[b.pages] = conv_state_after(window, seq.shape[-1], K).to(conv.dtype)
        for i, n, page in b.saves:
            conv[page] = conv_state_after(window[i], n, K).to(conv.dtype)
        out[b.rows] = y.transpose(1, 2)
    return out


def write_states(view: torch.Tensor, b: StateBatch, final: torch.Tensor, kept: dict[int, torch.Tensor]) -> None:
    """Store a batch's final states at its running pages and the states
    after n tokens at the save pages; mutates `view` (the pool)."""
    view[b.pages] = final.to(view.dtype)
    for i, n, page in b.saves:
        view[page] = kept[n][i].to(view.dtype)


def decode_special_floats(obj):
    """transformers writes inf / nan in config.json as {"__float__": "Infinity"}."""
    if isinstance(obj, dict):
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        return {k: decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_special_floats(v) for v in obj]
    return obj


class HybridAttention(nn.Module):
    """Attention of a hybrid layer: optional RoPE on the first `rotary_dim`
    dims of each head, no window; this rank's heads under a shard."""

    def __init__(self, a: Arch, rotary_dim: int, bias: bool = False, shard: TPShard = NO_TP) -> None:
        super().__init__()
        D = a.head_dim
        (q0, q1), (k0, k1) = head_ranges(a.num_heads, a.num_kv_heads, shard)
        self.q_proj = ColumnParallelLinear(a.hidden_size, (q0 * D, q1 * D), bias, a.num_heads * D)
        self.k_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), bias, a.num_kv_heads * D)
        self.v_proj = ColumnParallelLinear(a.hidden_size, (k0 * D, k1 * D), bias, a.num_kv_heads * D)
        self.o_proj = RowParallelLinear((q0 * D, q1 * D), a.hidden_size, bias, a.num_heads * D, shard)
        self.head_dim, self.rotary_dim, self.scale = D, rotary_dim, a.scale

    def _rotate(self, x: torch.Tensor, cos_sin) -> torch.Tensor:
        if not self.rotary_dim:
            return x
        r = self.rotary_dim
        return torch.cat([apply_rope(x[..., :r], *cos_sin), x[..., r:]], dim=-1)

    def forward(self, x: torch.Tensor, ctx: StepInputs, idx: int) -> torch.Tensor:
        T = x.shape[0]
        q = self._rotate(self.q_proj(x).view(T, -1, self.head_dim), ctx.cos_sin)
        k = self._rotate(self.k_proj(x).view(T, -1, self.head_dim), ctx.cos_sin)
        v = self.v_proj(x).view(T, -1, self.head_dim)
        k_cache, v_cache = ctx.pool.kv_view(idx)
        out = paged_attention(q, k, v, k_cache, v_cache, ctx.attn.for_layer(idx), scale=self.scale,
                              backend=ctx.attn.backend)
        return self.o_proj(out.reshape(T, -1))


class HybridLayer(nn.Module):
    """One layer: mixer (registered as `self_attn` or `mamba`) then FFN."""

    def __init__(self, mixer_name: str, mixer: nn.Module, ffn: nn.Module, hidden: int, eps: float) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden, eps)
        self.add_module(mixer_name, mixer)
        self.pre_ff_layernorm = RMSNorm(hidden, eps)
        self.feed_forward = ffn
        self.mixer_name = mixer_name

    def forward(self, h: torch.Tensor, ctx: StepInputs, idx: int) -> torch.Tensor:
        h = h + getattr(self, self.mixer_name)(self.input_layernorm(h), ctx, idx)
        return h + self.feed_forward(self.pre_ff_layernorm(h))


def hybrid_arch(cfg) -> Arch:
    """The Arch fields a hybrid uses (no windows, RoPE handled by the family)."""
    n, head_dim = cfg.num_hidden_layers, cfg.hidden_size // cfg.num_attention_heads
    return Arch(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_layers=n, num_heads=cfg.num_attention_heads,
                num_kv_heads=cfg.num_key_value_heads or cfg.num_attention_heads, head_dim=head_dim,
                rms_eps=cfg.rms_norm_eps, act=cfg.hidden_act, tie_embeddings=bool(cfg.tie_word_embeddings),
                windows=(0,) * n, chunks=(0,) * n, ropes=((),) * n, max_position=cfg.max_position_embeddings,
                scale=head_dim ** -0.5)


class HybridLM(DecoderLM):
    """A hybrid causal LM built from an HF config (object or config.json dict).

    Subclasses set `model_types` and implement `is_attention(cfg)` (per
    layer), `make_mamba(cfg, i)`, `make_ffn(cfg, i)`, `state_shapes(cfg)`
    ((conv_state, ssm_state) element shapes of one mixer) and optionally
    `rotary(cfg)` ((rope_parameters, rotary_dim) or None).  Under a shard
    the mixers and FFNs use `self.shard`; a recurrent state is split along
    its first dim (LayerSpec.per_rank), and only rank 0 has the LM head.
    """

    tensor_parallel = False   # per family: its Mamba mixer must be sharded (docs/parallel.md)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        return hybrid_arch(cfg)

    def __init__(self, config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 shard: TPShard = NO_TP) -> None:
        nn.Module.__init__(self)
        if shard.size > 1 and not self.tensor_parallel:
            raise ValueError(f"{type(self).__name__} does not support tensor_parallel_size > 1 yet")
        cfg = self.config = hf_config(decode_special_floats(config) if isinstance(config, dict) else config)
        a = self.arch = self.arch_from_config(cfg)
        self.dtype, self.device, self.shard = dtype, torch.device(device), shard
        attends = tuple(self.is_attention(cfg))
        if len(attends) != a.num_layers:
            raise ValueError(f"is_attention gave {len(attends)} entries for {a.num_layers} layers")
        rot = self.rotary(cfg)
        bias = bool(getattr(cfg, "attention_bias", False))    # Bamba has the field, Jamba does not
        with torch.device("meta"):
            self.model = nn.Module()
            self.model.embed_tokens = nn.Embedding(a.vocab_size, a.hidden_size)
            self.model.layers = nn.ModuleList(
                HybridLayer("self_attn", HybridAttention(a, rot[1] if rot else 0, bias, shard), self.make_ffn(cfg, i),
                            a.hidden_size, a.rms_eps) if att else
                HybridLayer("mamba", self.make_mamba(cfg, i), self.make_ffn(cfg, i), a.hidden_size, a.rms_eps)
                for i, att in enumerate(attends))
            self.model.final_layernorm = RMSNorm(a.hidden_size, a.rms_eps)
            self.lm_head = nn.Linear(a.hidden_size, a.vocab_size, bias=False) if shard.driver else None
        self.requires_grad_(False)
        self._attn = tuple(i for i, att in enumerate(attends) if att)
        self._state = tuple(i for i, att in enumerate(attends) if not att)
        conv, ssm = self.state_shapes(cfg)
        n = shard.size
        self._state_shapes = ((conv[0] // n,) + tuple(conv[1:]), (ssm[0] // n,) + tuple(ssm[1:]))
        self._rope = Rope(rot[1], rot[0], a.max_position) if rot else None

    # -- family hooks ------------------------------------------------------
    def is_attention(self, cfg) -> list[bool]:
        raise NotImplementedError

    def make_mamba(self, cfg, i: int) -> nn.Module:
        raise NotImplementedError

    def make_ffn(self, cfg, i: int) -> nn.Module:
        raise NotImplementedError

    def state_shapes(self, cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def rotary(self, cfg) -> tuple[dict, int] | None:
        return None

    # -- what the runner asks ----------------------------------------------
    @property
    def attn_layers(self) -> tuple[int, ...]:
        return self._attn

    @property
    def state_layers(self) -> tuple[int, ...]:
        """Model layer indices whose state is a Mamba conv + SSM state."""
        return self._state

    def layer_kv_shapes(self) -> dict[int, tuple[int, int, int, int]]:
        a = self.arch
        heads = kv_heads_per_rank(a.num_kv_heads, self.shard.size)
        return {i: (heads, a.head_dim, 0, 0) for i in self._attn}

    def layer_state_shapes(self) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per recurrent layer: (conv_state, ssm_state) element shapes."""
        return {i: self._state_shapes for i in self._state}

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attn_metadata: AttnMetadata,
                kv_pool: KVPool, rows: torch.Tensor | None = None,
                state_metadata: StateMetadata | None = None) -> torch.Tensor:
        """Logits [len(rows), vocab] (all T rows when rows is None) for the
        step's tokens; writes K/V and Mamba states into the pool.  Raises
        ValueError when the model has Mamba layers and state_metadata is
        None, or a layer's metadata is missing."""
        if self._state and state_metadata is None:
            raise ValueError("this model has Mamba layers: forward needs state_metadata")
        h = self.model.embed_tokens(input_ids)
        cos_sin = self._rope.cos_sin(positions, h.dtype) if self._rope else None
        ctx = StepInputs(attn_metadata, state_metadata, kv_pool, cos_sin)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, ctx, i)
        if rows is not None:
            h = h[rows]
        if self.lm_head is None:   # a tensor-parallel worker: rank 0 alone computes logits
            return h
        return self.lm_head(self.model.final_layernorm(h))
