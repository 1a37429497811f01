"""Building blocks shared by the model families: RMSNorm, RoPE, MLPs, MoE.

Parameter names follow the Hugging Face checkpoints (`weight`, `gate_proj`,
`router`, `experts.gate_up_proj`, ...) so loading is a name lookup.  Modules
are built on the meta device and filled by `load_weights`; nothing here
initialises weights.  RoPE frequencies are computed in fp32 on the CPU from
the config's `rope_parameters` (default, linear, llama3, yarn).  The MLP
and the MoE take a tensor-parallel shard (model/parallel.py): the
intermediate columns are split, the output summed with one all-reduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, TPShard

ACTIVATIONS = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


def activation(name: str):
    """The activation function called `name` in HF configs; ValueError if unknown."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim.  offset 0: `w * x_hat` (Llama);
    offset 1: `x_hat * (1 + w)` computed in fp32 (Gemma's zero-centred w).
    One fused `F.rms_norm` call: x_hat in fp32 as HF computes it, the
    weight applied in the input dtype (Llama) or in fp32 (Gemma)."""

    def __init__(self, dim: int, eps: float, offset: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.eps = eps
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[-1],)
        if self.offset:
            return F.rms_norm(x.float(), shape, self.offset + self.weight.float(), self.eps).to(x.dtype)
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), shape, eps=self.eps).to(x.dtype)


def _yarn(inv: torch.Tensor, dim: int, theta: float, p: dict, max_position: int) -> tuple[torch.Tensor, float]:
    orig = p.get("original_max_position_embeddings") or max_position
    factor = p.get("factor") or max_position / orig

    def mscale(scale: float, m: float = 1.0) -> float:
        return 0.1 * m * math.log(scale) + 1.0 if scale > 1 else 1.0

    attn = p.get("attention_factor")
    if attn is None:
        ms, ms_all = p.get("mscale"), p.get("mscale_all_dim")
        attn = mscale(factor, ms) / mscale(factor, ms_all) if ms and ms_all else mscale(factor)

    def corr_dim(rotations: float) -> float:
        # dimension whose wavelength makes `rotations` turns over the original context
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = corr_dim(p.get("beta_fast") or 32), corr_dim(p.get("beta_slow") or 1)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (high frequency), 0: interpolate by `factor`
    return inv / factor * (1 - keep) + inv * keep, float(attn)


def _llama3(inv: torch.Tensor, p: dict) -> torch.Tensor:
    factor, lo_f, hi_f = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / lo_f, inv / factor, inv)
    smooth = (old / wavelen - lo_f) / (hi_f - lo_f)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / hi_f) & (wavelen <= old / lo_f)
    return torch.where(medium, smoothed, scaled)


class Rope:
    """Rotary embedding for one `rope_parameters` dict (HF layout: rope_type,
    rope_theta, and the type's keys).  Raises ValueError on an unsupported
    type or a partial rotary factor."""

    def __init__(self, head_dim: int, params: dict, max_position: int) -> None:
        kind = params.get("rope_type", "default")
        theta = float(params["rope_theta"])
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("partial_rotary_factor != 1 is not supported")
        inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim)
        self.scaling = 1.0
        if kind == "linear":
            inv = inv / params["factor"]
        elif kind == "llama3":
            inv = _llama3(inv, params)
        elif kind == "yarn":
            inv, self.scaling = _yarn(inv, head_dim, theta, params, max_position)
        elif kind != "default":
            raise ValueError(f"unsupported rope_type {kind!r}; known: default, linear, llama3, yarn")
        self.inv_freq = inv

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos [T, head_dim] and the signed sin [T, head_dim] (first half
        negated) for `positions` [T], in `dtype`: what `apply_rope` takes."""
        if self.inv_freq.device != positions.device:
            # moved once: a copy per step would be a host-to-device copy a
            # CUDA graph cannot capture
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.float().unsqueeze(-1) * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        sin = emb.sin() * self.scaling
        sin[:, : freqs.shape[-1]].neg_()
        return (emb.cos() * self.scaling).to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, H, D] by the half-split convention (first half pairs with
    second half), as HF's rotate_half: x * cos + cat(-x2, x1) * sin, here
    x * cos + cat(x2, x1) * signed_sin (`Rope.cos_sin`) in three kernels."""
    return torch.addcmul(x * cos.unsqueeze(1), x.roll(x.shape[-1] // 2, -1), sin.unsqueeze(1))


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)); gate and up column-parallel, down
    row-parallel (one all-reduce, or none with `reduce=False`: an MoE sums
    its experts' partial outputs once) under a shard."""

    def __init__(self, hidden: int, inter: int, act: str, bias: bool = False, shard: TPShard = NO_TP,
                 reduce: bool = True) -> None:
        super().__init__()
        cols = shard.split(inter, "intermediate_size")
        self.gate_proj = ColumnParallelLinear(hidden, cols, bias, inter)
        self.up_proj = ColumnParallelLinear(hidden, cols, bias, inter)
        self.down_proj = RowParallelLinear(cols, hidden, bias, inter, shard, reduce)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Linear router with bias: logits [T, E]."""

    def __init__(self, hidden: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(num_experts), requires_grad=False)


class Experts(nn.Module):
    """gpt-oss experts: fused gate/up [E, H, 2I] with gate and up interleaved
    (even / odd columns), clamped SwiGLU `(up + 1) * gate * sigmoid(alpha * gate)`.
    Under a shard every expert keeps its intermediate columns [s, e) (the
    interleaved gate/up columns [2s, 2e)); the partial outputs are summed
    by the MoE, so only rank 0 adds the down bias."""

    def __init__(self, hidden: int, inter: int, num_experts: int, alpha: float, limit: float,
                 shard: TPShard = NO_TP) -> None:
        super().__init__()
        s, e = shard.split(inter, "intermediate_size")
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, hidden, 2 * (e - s)), requires_grad=False)
        self.gate_up_proj_bias = nn.Parameter(torch.empty(num_experts, 2 * (e - s)), requires_grad=False)
        self.down_proj = nn.Parameter(torch.empty(num_experts, e - s, hidden), requires_grad=False)
        self.down_proj_bias = nn.Parameter(torch.empty(num_experts, hidden), requires_grad=False)
        self.alpha, self.limit = alpha, limit
        self.adds_bias = shard.driver
        self.shard_slices = {} if shard.size == 1 else {
            "gate_up_proj": (2, 2 * s, 2 * e), "gate_up_proj_bias": (1, 2 * s, 2 * e), "down_proj": (1, s, e)}

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        h = x @ self.gate_up_proj[e] + self.gate_up_proj_bias[e]
        gate = h[..., ::2].clamp(max=self.limit)
        up = h[..., 1::2].clamp(-self.limit, self.limit)
        y = ((up + 1) * gate * torch.sigmoid(gate * self.alpha)) @ self.down_proj[e]
        return y + self.down_proj_bias[e] if self.adds_bias else y


class MoE(nn.Module):
    """Top-k routed experts; the k chosen logits are softmaxed into weights.
    The router is replicated (every rank routes alike); each rank runs its
    share of every chosen expert and one all-reduce sums them."""

    def __init__(self, hidden: int, inter: int, num_experts: int, top_k: int, alpha: float, limit: float,
                 shard: TPShard = NO_TP) -> None:
        super().__init__()
        self.router = Router(hidden, num_experts)
        self.experts = Experts(hidden, inter, num_experts, alpha, limit, shard)
        self.top_k, self.shard = top_k, shard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.linear(x, self.router.weight, self.router.bias)
        top_val, top_idx = torch.topk(logits, self.top_k, dim=-1)
        weights = torch.softmax(top_val, dim=-1)
        out = torch.zeros_like(x)
        for e in torch.unique(top_idx).tolist():
            tok, slot = torch.where(top_idx == e)
            y = self.experts.expert(e, x[tok]) * weights[tok, slot, None]
            out.index_add_(0, tok, y.to(x.dtype))
        return self.shard.all_reduce(out)
