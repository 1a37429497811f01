"""Bamba: a Mamba-2 hybrid (IBM), attention at `attn_layer_indices`, Mamba-2
layers elsewhere, a SwiGLU MLP after every mixer.

The Mamba-2 mixer, as transformers' `BambaMixer` has it: one in_proj gives
the gate z, the conv input (x, B, C: `mamba_n_groups` groups of B and C) and
dt per head; a depthwise causal conv over x|B|C; the SSD scan with a scalar
A per head (`ssd_scan` for prefill chunks, `ssd_step` for decodes), dt
clamped to `time_step_limit`; then a gated RMSNorm over groups
(`norm(y * silu(z))`) and out_proj.  Attention rotates the first half of
each head (`partial_rotary_factor` 0.5, which transformers hard-codes for
Bamba).  The conv state is [conv_dim, d_conv] with conv_dim = d_inner +
2 * groups * d_state; the SSM state is [heads, head_dim, d_state].

Tensor parallel (docs/parallel.md): the mixer by heads, and B / C by
groups (`mamba_n_groups` must divide by the ranks: groups are not
replicated): in_proj keeps its z, x, B, C and dt rows of this rank (five
ranges of one fused tensor), the conv its x, B and C channels, so the conv
state [conv_dim / N, d_conv] and the SSM state [heads / N, head_dim,
d_state] split alike; the gated norm keeps its channels (whole groups),
out_proj is row-parallel.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import GatedMLP
from ..mamba_ops import ssd_scan, ssd_step
from ..parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, TPShard
from .hybrid import HybridLM, StepInputs, run_conv, write_states


def mamba2_dims(cfg) -> tuple[int, int, int, int, int, int]:
    """(d_inner, heads, head_dim, groups, d_state, conv_dim); ValueError when
    the heads do not tile d_inner."""
    inner, heads = cfg.mamba_expand * cfg.hidden_size, cfg.mamba_n_heads
    head_dim = cfg.mamba_d_head if cfg.mamba_d_head != "auto" else inner // heads
    if heads * head_dim != inner:
        raise ValueError(f"mamba_n_heads {heads} x mamba_d_head {head_dim} != d_inner {inner}")
    groups, N = cfg.mamba_n_groups, cfg.mamba_d_state
    return inner, heads, head_dim, groups, N, inner + 2 * groups * N


class GatedRMSNorm(nn.Module):
    """RMS norm of y * silu(z) over groups of `group_size` channels, in fp32."""

    def __init__(self, dim: int, group_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        g = (y.float() * F.silu(z.float())).unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * g.flatten(-2).to(y.dtype)


class BambaMamba(nn.Module):
    """Mamba-2 mixer over the pool."""

    def __init__(self, cfg, shard: TPShard = NO_TP) -> None:
        super().__init__()
        inner, H, P, G, N, conv_dim = mamba2_dims(cfg)
        (s, e), (h0, h1) = shard.split(inner, "d_inner"), shard.split(H, "mamba_n_heads")
        g0, g1 = shard.split(G, "mamba_n_groups")
        # this rank's x, B and C channels of the conv input x|B|C, and of in_proj's z|x|B|C|dt
        xbc = ((s, e), (inner + g0 * N, inner + g1 * N), (inner + (G + g0) * N, inner + (G + g1) * N))
        rows = ((s, e),) + tuple((inner + a, inner + b) for a, b in xbc) + \
            ((inner + conv_dim + h0, inner + conv_dim + h1),)
        inner_l, H_l, G_l = e - s, h1 - h0, g1 - g0
        conv_l = inner_l + 2 * G_l * N
        self.in_proj = ColumnParallelLinear(cfg.hidden_size, rows, cfg.mamba_proj_bias, inner + conv_dim + H)
        self.conv1d = nn.Conv1d(conv_l, conv_l, cfg.mamba_d_conv, groups=conv_l, bias=cfg.mamba_conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(H_l))
        self.A_log = nn.Parameter(torch.empty(H_l))
        self.D = nn.Parameter(torch.empty(H_l))
        self.norm = GatedRMSNorm(inner_l, inner // G, cfg.rms_norm_eps)
        self.out_proj = RowParallelLinear((s, e), cfg.hidden_size, cfg.mamba_proj_bias, inner, shard)
        self.dims = (inner_l, H_l, P, G_l, N, conv_l)
        if shard.size > 1:
            heads = (0, h0, h1)
            self.shard_slices = {"dt_bias": heads, "A_log": heads, "D": heads}
            self.conv1d.shard_slices = {"weight": (0, xbc), "bias": (0, xbc)}
            self.norm.shard_slices = {"weight": (0, s, e)}
        limit = cfg.time_step_limit or (0.0, float("inf"))
        self.dt_limit = (float(limit[0]), float(limit[1]))
        self.chunk, self.act = cfg.mamba_chunk_size, cfg.hidden_act

    def forward(self, x: torch.Tensor, ctx: StepInputs, idx: int) -> torch.Tensor:
        inner, H, P, G, N, conv_dim = self.dims
        meta = ctx.states.for_layer(idx)
        conv, ssm = ctx.pool.state_view(idx)
        z, xbc, dt = self.in_proj(x).split([inner, conv_dim, H], dim=-1)
        xbc = run_conv(xbc, meta, conv, self.conv1d.weight[:, 0], self.conv1d.bias, self.act)
        xs, B, C = xbc.split([inner, G * N, G * N], dim=-1)
        A = -torch.exp(self.A_log.float())
        y = torch.empty_like(xs)
        for b in meta.batches:
            nseq, L = b.rows.shape
            state = ssm[b.pages]
            if L == 1:      # decode: the recurrence, no chunk padding
                r = b.rows[:, 0]
                out, final = ssd_step(xs[r].view(nseq, H, P), dt[r], A, B[r].view(nseq, G, N),
                                      C[r].view(nseq, G, N), self.D, self.dt_bias, state, self.dt_limit)
                kept = {1: final}
            else:
                out, final, kept = ssd_scan(xs[b.rows].view(nseq, L, H, P), dt[b.rows], A,
                                            B[b.rows].view(nseq, L, G, N), C[b.rows].view(nseq, L, G, N), self.D,
                                            self.dt_bias, state, self.chunk, self.dt_limit, b.keep)
            write_states(ssm, b, final, kept)
            y[b.rows] = out.reshape(nseq, L, inner)
        return self.out_proj(self.norm(y, z))


class BambaForCausalLM(HybridLM):
    model_types = ("bamba",)
    tensor_parallel = True

    def is_attention(self, cfg) -> list[bool]:
        attn = set(cfg.attn_layer_indices or ())
        return [i in attn for i in range(cfg.num_hidden_layers)]

    def make_mamba(self, cfg, i: int) -> nn.Module:
        return BambaMamba(cfg, self.shard)

    def make_ffn(self, cfg, i: int) -> nn.Module:
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, bias=bool(cfg.mlp_bias),
                        shard=self.shard)

    def state_shapes(self, cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
        _, H, P, _, N, conv_dim = mamba2_dims(cfg)
        return (conv_dim, cfg.mamba_d_conv), (H, P, N)

    def rotary(self, cfg) -> tuple[dict, int] | None:
        params = dict(cfg.rope_parameters)
        factor = params.pop("partial_rotary_factor", 1.0)
        return params, int(self.arch.head_dim * factor)
