"""Mamba state ops in plain PyTorch: the causal depthwise conv1d that carries
a conv state, Mamba-1's selective scan (S6) and Mamba-2's SSD scan.

Every op *continues* from a given state (a fresh request's state is zeros,
which is exactly a scan from the start) and returns the final state, so a
prompt may be computed in chunks over any number of steps.  Both scans also
return the states after requested positions within the chunk (`keep`): the
runner writes them into prefix-cache checkpoint pages.  Mamba-1 runs its
recurrence step by step, so a kept state is read off the way; Mamba-2 runs
chunks of `chunk` tokens in closed form and splits the scan at each kept
position.

Layouts (batch b, tokens L), all math in fp32, outputs cast back to the
input dtype:
- conv: x [b, C, L]; conv state [b, C, K] = the last K inputs (zero before
  the first token); weight [C, K].
- Mamba-1: u, dt, z [b, D, L]; B, C [b, L, N]; A [D, N]; D, dt_bias [D];
  state [b, D, N].
- Mamba-2: x [b, L, H, P]; dt [b, L, H]; B, C [b, L, G, N] (head h reads
  group h // (H / G)); A, D, dt_bias [H]; state [b, H, P, N].
Checked against transformers' torch paths in tests/model/test_mamba_ops.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .layers import activation

# Mamba-1 discretises this many steps at once: bounds the [b, D, block, N]
# temporaries while keeping the per-step loop to one multiply-add.
SCAN_BLOCK = 64


def causal_conv1d(x: torch.Tensor, state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  act: str | None = "silu") -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal conv of x [b, C, L] continuing after `state`
    [b, C, K]; returns (y [b, C, L] after `act`, window [b, C, K + L]).
    The window is state ++ x: `conv_state_after(window, n)` is the state
    after n of the L tokens.  Mutates nothing; ValueError on a state whose
    length is not the kernel's."""
    K = weight.shape[-1]
    if state.shape[-1] != K or state.shape[:2] != x.shape[:2]:
        raise ValueError(f"state {tuple(state.shape)} does not fit x {tuple(x.shape)} and kernel {K}")
    window = torch.cat([state.to(x.dtype), x], dim=-1)
    # output o reads window[o : o + K]; token t sits at K + t, so its output is o = t + 1
    y = F.conv1d(window, weight.unsqueeze(1).to(x.dtype), bias, groups=x.shape[1])[..., 1:]
    return (activation(act)(y) if act else y), window


def conv_state_after(window: torch.Tensor, n: int, kernel: int) -> torch.Tensor:
    """The conv state after the first n tokens of a `causal_conv1d` window."""
    return window[..., n:n + kernel]


def _check_keep(keep: Iterable[int], length: int) -> list[int]:
    points = sorted(set(keep))
    if points and not (0 < points[0] and points[-1] <= length):
        raise ValueError(f"keep positions must lie in [1, {length}], got {points}")
    return points


def selective_scan(u: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, z: torch.Tensor | None, dt_bias: torch.Tensor, state: torch.Tensor,
                   keep: Iterable[int] = ()) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Mamba-1 (S6) over L tokens from `state`: dt <- softplus(dt + dt_bias),
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t + D u_t, gated by
    silu(z) when z is given.  Returns (y [b, D, L], final state [b, D, N]
    fp32, {n: state after n tokens} for n in keep).  Mutates nothing."""
    L = u.shape[-1]
    points = set(_check_keep(keep, L))
    dt = F.softplus(dt.float() + dt_bias.float()[:, None])
    uf, Af, Bf, Cf = u.float(), A.float(), B.float(), C.float()
    h = state.float()
    kept: dict[int, torch.Tensor] = {}
    ys = []
    for t0 in range(0, L, SCAN_BLOCK):
        t1 = min(L, t0 + SCAN_BLOCK)
        dtb = dt[:, :, t0:t1, None]
        decay = torch.exp(Af[None, :, None, :] * dtb)                # [b, D, l, N]
        inject = dtb * Bf[:, None, t0:t1, :] * uf[:, :, t0:t1, None]
        hs = torch.empty_like(decay)
        for i in range(t1 - t0):
            h = decay[:, :, i] * h + inject[:, :, i]
            hs[:, :, i] = h
            if t0 + i + 1 in points:
                kept[t0 + i + 1] = h     # h is rebound each step, never mutated in place
        ys.append(torch.einsum("bdln,bln->bdl", hs, Cf[:, t0:t1]))
    y = torch.cat(ys, dim=-1) + uf * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype), h, kept


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., l] -> [..., l, l]: entry (t, s) is a_{s+1} + ... + a_t for
    s <= t (0 on the diagonal) and -inf above it.  Summed from the masked
    terms rather than as cumsum differences, which lose precision."""
    l = a.shape[-1]
    below = torch.ones(l, l, dtype=torch.bool, device=a.device).tril(-1)
    sums = a.unsqueeze(-1).expand(*a.shape, l).masked_fill(~below, 0.0).cumsum(dim=-2)
    return sums.masked_fill(~torch.ones_like(below).tril(), float("-inf"))


def _heads(t: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    groups = t.shape[dim]
    if heads % groups:
        raise ValueError(f"{heads} heads are not a multiple of {groups} groups")
    return t.float().repeat_interleave(heads // groups, dim=dim)


def _ssd_dt(dt: torch.Tensor, dt_bias: torch.Tensor, dt_limit: tuple[float, float]) -> torch.Tensor:
    return F.softplus(dt.float() + dt_bias.float()).clamp(dt_limit[0], dt_limit[1])


def _ssd_run(xf: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, Bh: torch.Tensor, Ch: torch.Tensor,
             h: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD without the D skip: chunks of `chunk` tokens in closed form, the
    state carried from chunk to chunk.  Returns (y [b, L, H, P], state)."""
    xdt = xf * dt[..., None]
    a = dt * A.float()                                               # log decay per token and head
    ys = []
    for c0 in range(0, xf.shape[1], chunk):
        c1 = min(xf.shape[1], c0 + chunk)
        ac, Bc, Cc, xc = a[:, c0:c1], Bh[:, c0:c1], Ch[:, c0:c1], xdt[:, c0:c1]
        cum = ac.cumsum(dim=1)                                       # [b, l, H]
        within = torch.einsum("blhn,bshn->bhls", Cc, Bc) * torch.exp(_segsum(ac.transpose(1, 2)))
        y = torch.einsum("bhls,bshp->blhp", within, xc)
        y = y + torch.einsum("blhn,bhpn->blhp", Cc, h) * torch.exp(cum)[..., None]
        to_end = torch.exp(cum[:, -1:] - cum)                         # decay from token l to the chunk's end
        h = h * torch.exp(cum[:, -1])[..., None, None] + torch.einsum("blhn,blhp->bhpn", Bc * to_end[..., None], xc)
        ys.append(y)
    return torch.cat(ys, dim=1), h


def ssd_scan(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor, dt_bias: torch.Tensor, state: torch.Tensor, chunk: int,
             dt_limit: tuple[float, float] = (0.0, float("inf")),
             keep: Iterable[int] = ()) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """Mamba-2 SSD over L tokens from `state` (scalar A per head):
    dt <- clamp(softplus(dt + dt_bias), dt_limit), h_t = exp(dt_t A) h_{t-1}
    + dt_t x_t B_t^T, y_t = h_t C_t + D x_t.  The scan is split at every
    position in `keep`.  Returns (y [b, L, H, P], final state [b, H, P, N]
    fp32, {n: state after n tokens}).  Mutates nothing; ValueError on a bad
    chunk or keep position."""
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    L, H = x.shape[1], x.shape[2]
    points = _check_keep(keep, L)
    xf, dtf = x.float(), _ssd_dt(dt, dt_bias, dt_limit)
    Bh, Ch = _heads(B, H, 2), _heads(C, H, 2)
    h, kept, ys, start = state.float(), {}, [], 0
    for end in [p for p in points if p < L] + [L]:
        y, h = _ssd_run(xf[:, start:end], dtf[:, start:end], A, Bh[:, start:end], Ch[:, start:end], h, chunk)
        ys.append(y)
        if end in points:
            kept[end] = h
        start = end
    y = torch.cat(ys, dim=1) + xf * D.float()[:, None]
    return y.to(x.dtype), h, kept


def ssd_step(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor, dt_bias: torch.Tensor, state: torch.Tensor,
             dt_limit: tuple[float, float] = (0.0, float("inf"))) -> tuple[torch.Tensor, torch.Tensor]:
    """One Mamba-2 token per sequence (decode): x [b, H, P], dt [b, H],
    B, C [b, G, N].  Returns (y [b, H, P], new state [b, H, P, N] fp32);
    the same recurrence as `ssd_scan` with L = 1."""
    H = x.shape[1]
    dtf = _ssd_dt(dt, dt_bias, dt_limit)
    Bh, Ch, xf = _heads(B, H, 1), _heads(C, H, 1), x.float()
    decay = torch.exp(dtf * A.float())[..., None, None]
    h = state.float() * decay + (dtf[..., None, None] * Bh[:, :, None, :]) * xf[..., None]
    y = torch.einsum("bhpn,bhn->bhp", h, Ch) + xf * D.float()[:, None]
    return y.to(x.dtype), h
