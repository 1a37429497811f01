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
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import GatedMLP, RMSNorm
from ..mamba_ops import selective_scan
from .hybrid import HybridLM, StepInputs, run_conv, write_states


class JambaMamba(nn.Module):
    """Mamba-1 mixer over the pool: in_proj -> (conv -> x_proj -> scan) * silu(gate) -> out_proj."""

    def __init__(self, cfg) -> None:
        super().__init__()
        hidden, inner = cfg.hidden_size, cfg.mamba_expand * cfg.hidden_size
        N, K, R = cfg.mamba_d_state, cfg.mamba_d_conv, cfg.mamba_dt_rank
        self.in_proj = nn.Linear(hidden, 2 * inner, bias=cfg.mamba_proj_bias)
        self.conv1d = nn.Conv1d(inner, inner, K, groups=inner, bias=cfg.mamba_conv_bias)
        self.x_proj = nn.Linear(inner, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(inner, N))
        self.D = nn.Parameter(torch.empty(inner))
        self.out_proj = nn.Linear(inner, hidden, bias=cfg.mamba_proj_bias)
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

    def __init__(self, cfg) -> None:
        super().__init__()
        self.router = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
                                     for _ in range(cfg.num_experts))
        self.top_k = cfg.num_experts_per_tok

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.router(x), dim=-1, dtype=torch.float32)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = weights.to(x.dtype)
        out = torch.zeros_like(x)
        for e in torch.unique(chosen).tolist():
            tok, slot = torch.where(chosen == e)
            out.index_add_(0, tok, self.experts[e](x[tok]) * weights[tok, slot, None])
        return out


class JambaForCausalLM(HybridLM):
    model_types = ("jamba",)

    def is_attention(self, cfg) -> list[bool]:
        return [i % cfg.attn_layer_period == cfg.attn_layer_offset for i in range(cfg.num_hidden_layers)]

    def make_mamba(self, cfg, i: int) -> nn.Module:
        return JambaMamba(cfg)

    def make_ffn(self, cfg, i: int) -> nn.Module:
        if cfg.num_experts > 1 and i % cfg.expert_layer_period == cfg.expert_layer_offset:
            return JambaMoE(cfg)
        return GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)

    def state_shapes(self, cfg) -> tuple[tuple[int, ...], tuple[int, ...]]:
        inner = cfg.mamba_expand * cfg.hidden_size
        return (inner, cfg.mamba_d_conv), (inner, cfg.mamba_d_state)
