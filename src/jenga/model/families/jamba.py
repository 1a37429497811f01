"""Jamba: Mamba-1 layers with one attention layer every `attn_layer_period`
(at `attn_layer_offset`), and a top-k mixture of experts in place of the MLP
every `expert_layer_period` layers (at `expert_layer_offset`).

Differences from a plain Mamba-1 block, as transformers' `JambaMambaMixer`
has them: RMS norms on dt, B and C after `x_proj`; dt_proj's bias is added
inside the scan (before softplus).  Attention has no positional encoding.
The router softmaxes over all experts and keeps the top-k probabilities
unnormalised.  Checkpoints store experts one by one
(`feed_forward.experts.{e}.{gate,up,down}_proj`), as Jamba's and
`save_pretrained`'s do.

Tensor parallel (docs/parallel.md): the mixer by d_inner (in_proj's x and
gate rows, conv channels, dt_proj rows, A and D rows; x_proj and out_proj
row-parallel, so dt, B and C are all-reduced before their norms), conv and
SSM states split the same way; attention by heads; every expert's MLP by
its intermediate size, with one all-reduce for the whole MoE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import GatedMLP, RMSNorm
from ..mamba_ops import selective_scan
from ..parallel import NO_TP, ColumnParallelLinear, RowParallelLinear, TPShard
from .hybrid import HybridLM, StepInputs, run_conv, write_states


class JambaMamba(nn.Module):
    """Mamba-1 mixer over the pool: in_proj -> (conv -> x_proj -> scan) * silu(gate) -> out_proj."""

    def __init__(self, cfg, shard: TPShard = NO_TP) -> None:
        super().__init__()
        hidden, inner = cfg.hidden_size, cfg.mamba_expand * cfg.hidden_size
        N, K, R = cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_dt_rank
        s, e = shard.split(inner, "mamba_expand * hidden_size")
        self.in_proj = ColumnParallelLinear(hidden, ((s, e), (inner + s, inner + e)), cfg.mamba_proj_bias,
                                            2 * inner)
        self.conv1d = nn.Conv1d(e - s, e - s, K, groups=e - s, bias=cfg.mamba_conv_bias)
        self.x_proj = RowParallelLinear((s, e), R + 2 * N, False, inner, shard)
        self.dt_proj = ColumnParallelLinear(R, (s, e), True, inner)
        self.A_log = nn.Parameter(torch.empty(e - s, N))
        self.D = nn.Parameter(torch.empty(e - s))
        self.out_proj = RowParallelLinear((s, e), hidden, cfg.mamba_proj_bias, inner, shard)
        rows = (0, s, e)
        self.shard_slices = {} if shard.size == 1 else {"A_log": rows, "D": rows}
        if shard.size > 1:
            self.conv1d.shard_slices = {"weight": rows, "bias": rows}
        self.dt_layernorm = RMSNorm(R, cfg.rms_norm_eps)
        self.b_layernorm = RMSNorm(N, cfg.rms_norm_eps)
        self.c_layernorm = RMSNorm(N, cfg.rms_norm_eps)
        self.split, self.act = (R, N, N), cfg.hidden_act

    def forward(self, x: torch.Tensor, ctx: StepInputs, idx: int) -> torch.Tensor:
        meta = ctx.states.for_layer(idx)
        conv, ssm = ctx.pool.state_view(idx)
        u, gate = self.in_proj(x).chunk(2, dim=-1)
        u = run_conv(u, meta, conv, self.conv1d.weight[:, 0], self.conv1d.bias, self.act)
        dt, B, C = self.x_proj(u).split(self.split, dim=-1)
        dt = F.linear(self.dt_layernorm(dt), self.dt_proj.weight)     # bias goes in with softplus
        B, C = self.b_layernorm(B), self.c_layernorm(C)
        A = -torch.exp(self.A_log.float())
        y = torch.empty_like(u)
        for b in meta.batches:
            out, final, kept = selective_scan(u[b.rows].transpose(1, 2), dt[b.rows].transpose(1, 2), A, B[b.rows],
                                              C[b.rows], self.D, gate[b.rows].transpose(1, 2), self.dt_proj.bias,
                                              ssm[b.pages], b.keep)
            write_states(ssm, b, final, kept)
            y[b.rows] = out.transpose(1, 2)
        return self.out_proj(y)


class JambaMoE(nn.Module):
    """Router over all experts (softmax), the top-k probabilities as weights."""

    def __init__(self, cfg, shard: TPShard = NO_TP) -> None:
        super().__init__()
        self.router = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, shard=shard,
                                              reduce=False) for _ in range(cfg.num_experts))
        self.top_k, self.shard = cfg.num_experts_per_tok, shard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.router(x), dim=-1, dtype=torch.float32)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(x)
        for e in torch.unique(chosen).tolist():
            tok, slot = torch.where(chosen == e)
            out.index_add_(0, tok, self.experts[e](x[tok]) * weights[tok, slot, None])
        return self.shard.all_reduce(out)


class JambaForCausalLM(HybridLM):
    model_types = ("jamba",)
    tensor_parallel = True

    def is_attention(self, cfg) -> list[bool]:
        return [i % cfg.attn_layer_period == cfg.attn_layer_offset for i in range(cfg.num_hidden_layers)]

    def make_mamba(self, cfg, i: int) -> nn.Module:
        return JambaMamba(cfg, self.shard)

    def make_ffn(self, cfg, i: int) -> nn.Module:
        if cfg.num_experts > 1 and i % cfg.expert_layer_period == cfg.expert_layer_offset:
            return JambaMoE(cfg, self.shard)
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, shard=self.shard)

    def state_shapes(self, cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
        inner = cfg.mamba_expand * cfg.hidden_size
        return (inner, cfg.mamba_d_conv), (inner, cfg.mamba_d_state)
