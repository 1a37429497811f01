"""Llama 4 (text): chunked-local RoPE layers, global NoPE layers, and MoE.

What differs from Llama, following transformers' `Llama4TextModel`:
- layer pattern: `no_rope_layers[i]` 1 means layer i uses RoPE; such layers
  attend within their `attention_chunk_size` chunk (`layer_types` says
  `chunked_attention`), the others (every 4th in Scout) attend globally
  without positions;
- RoPE rotates adjacent pairs (dims 2i, 2i+1: the complex form), not halves;
- `use_qk_norm`: on RoPE layers q and k get a weightless RMS norm *after*
  RoPE;
- `attn_temperature_tuning`: on NoPE layers q is scaled by
  `1 + attn_scale * log1p(floor((pos + 1) / floor_scale))` (the token's
  position; transformers counts it from its cache length, which is the
  same for the contiguous positions it runs);
- feed-forward: the layers in `moe_layers` (every `interleave_moe_layer_step`
  -th by default) are a shared SwiGLU expert plus routed experts: the
  router's top-k logits go through a sigmoid and *scale the expert's input*;
  the other layers are dense SwiGLU MLPs of `intermediate_size_mlp`.
Checkpoint names use `feed_forward` where ours say `mlp`.  Built from a
`llama4_text` config, or a multimodal `llama4` config whose text model it
runs (vision weights skipped).  Tensor-parallel sharding is not done here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..attention import paged_attention
from ..layers import GatedMLP, activation
from .base import Arch, Attention, DecoderLayer, DecoderLM, common_arch, hf_config, text_tower_name

_VISION_PREFIXES = ("model.vision_model.", "vision_model.", "model.multi_modal_projector.",
                    "multi_modal_projector.")


def apply_rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, H, D] pair by pair: (x[2i], x[2i+1]) by angle i, as
    transformers' Llama 4 complex multiply.  cos/sin [T, D] are `Rope.cos_sin`
    output (frequencies repeated over both halves; the second half is used,
    since `cos_sin` returns sin with its first half negated)."""
    half = x.shape[-1] // 2
    c, s = cos[:, None, half:], sin[:, None, half:]
    xf = x.float()
    even, odd = xf[..., 0::2], xf[..., 1::2]
    out = torch.stack((even * c - odd * s, even * s + odd * c), dim=-1)
    return out.flatten(-2).to(x.dtype)


def l2_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS norm over the last dim, computed in fp32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class Llama4Attention(Attention):
    """Attention of one Llama 4 layer: pairwise RoPE + L2 qk-norm on RoPE
    layers, temperature-scaled queries on NoPE layers."""

    def __init__(self, a: Arch, idx: int, use_rope: bool, qk_norm: bool, temperature: tuple[float, float] | None):
        super().__init__(a, idx)
        self.use_rope, self.l2 = use_rope, qk_norm and use_rope
        self.temperature = None if use_rope else temperature   # (floor_scale, attn_scale)
        self.eps = a.rms_eps

    def forward(self, x, cos_sin, meta, kv, backend):
        T = x.shape[0]
        q = self.q_proj(x).view(T, -1, self.head_dim)
        k = self.k_proj(x).view(T, -1, self.head_dim)
        v = self.v_proj(x).view(T, -1, self.head_dim)
        if self.use_rope:
            q, k = apply_rope_pairs(q, *cos_sin), apply_rope_pairs(k, *cos_sin)
        if self.l2:
            q, k = l2_norm(q, self.eps), l2_norm(k, self.eps)
        if self.temperature is not None:
            floor_scale, attn_scale = self.temperature
            pos = meta.positions.to(x.device, torch.float32)
            scale = torch.log1p(torch.floor((pos + 1.0) / floor_scale)) * attn_scale + 1.0
            q = (q * scale[:, None, None]).to(q.dtype)
        out = paged_attention(q, k, v, kv[0], kv[1], meta, scale=self.scale, window=self.window,
                              chunk=self.chunk, backend=backend)
        return self.o_proj(out.reshape(T, -1))


class Llama4Experts(nn.Module):
    """Routed experts: fused gate|up [E, H, 2I] (gate first), down [E, I, H]."""

    def __init__(self, hidden: int, inter: int, num_experts: int, act: str) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, hidden, 2 * inter), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(num_experts, inter, hidden), requires_grad=False)
        self.act = activation(act)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = (x @ self.gate_up_proj[e]).chunk(2, dim=-1)
        return (up * self.act(gate)) @ self.down_proj[e]


class Llama4MoE(nn.Module):
    """Shared expert + top-k routed experts; a token's routed input is
    scaled by sigmoid(router logit) before the expert runs."""

    def __init__(self, hidden: int, inter: int, num_experts: int, top_k: int, act: str) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, num_experts, bias=False)
        self.experts = Llama4Experts(hidden, inter, num_experts, act)
        self.shared_expert = GatedMLP(hidden, inter, act)
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top_val, top_idx = torch.topk(self.router(x), self.top_k, dim=-1)
        scores = torch.sigmoid(top_val.float()).to(x.dtype)
        out = self.shared_expert(x)
        for e in torch.unique(top_idx).tolist():
            tok, slot = torch.where(top_idx == e)
            out.index_add_(0, tok, self.experts.expert(e, x[tok] * scores[tok, slot, None]).to(x.dtype))
        return out


def text_config(cfg):
    """The text config of a `llama4_text` or multimodal `llama4` config."""
    cfg = hf_config(cfg)
    return cfg.text_config if getattr(cfg, "model_type", "") == "llama4" else cfg


class Llama4ForCausalLM(DecoderLM):
    model_types = ("llama4_text", "llama4")
    tensor_parallel = False   # its attention and MoE are not sharded yet (docs/parallel.md)

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(text_config(config), *args, **kwargs)

    @classmethod
    def arch_from_config(cls, cfg) -> Arch:
        if len(cfg.no_rope_layers) < cfg.num_hidden_layers:
            raise ValueError(f"no_rope_layers has {len(cfg.no_rope_layers)} entries for "
                             f"{cfg.num_hidden_layers} layers")
        bias = bool(cfg.attention_bias)
        return common_arch(cfg, qkv_bias=bias, o_bias=bias, num_experts=cfg.num_local_experts,
                           top_k=cfg.num_experts_per_tok)

    def make_layer(self, a: Arch, idx: int) -> nn.Module:
        c = self.config
        temperature = (float(c.floor_scale), float(c.attn_scale)) if c.attn_temperature_tuning else None
        attn = Llama4Attention(a, idx, bool(c.no_rope_layers[idx]), bool(c.use_qk_norm), temperature)
        if idx in set(c.moe_layers):
            mlp = Llama4MoE(a.hidden_size, a.intermediate_size, a.num_experts, a.top_k, a.act)
        else:
            mlp = GatedMLP(a.hidden_size, c.intermediate_size_mlp, a.act)
        return DecoderLayer(a, idx, mlp, attn)

    def map_name(self, name: str) -> str | None:
        name = text_tower_name(name, _VISION_PREFIXES)
        return None if name is None else super().map_name(name.replace(".feed_forward.", ".mlp."))
