"""mamba_ops against transformers' torch reference paths (Jamba's conv and
selective scan, Bamba's chunked SSD and single-step update), plus the
properties the pool relies on: a scan split anywhere and continued from its
state equals one pass, and kept states equal the final states of prefixes."""

from __future__ import annotations

import pytest
import torch
from transformers.models.bamba import modeling_bamba as HB
from transformers.models.jamba import modeling_jamba as HJ

from jenga.model.mamba_ops import causal_conv1d, conv_state_after, selective_scan, ssd_scan, ssd_step

G = torch.Generator().manual_seed(0)


def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=G) * scale


# -- conv ----------------------------------------------------------------
def test_conv_from_zero_state_equals_transformers_prefill():
    x, w, b = rnd(2, 6, 11), rnd(6, 4), rnd(6)
    y, window = causal_conv1d(x, torch.zeros(2, 6, 4), w, b)
    torch.testing.assert_close(y, HJ.causal_conv1d_fn(x, w, b, activation="silu"), rtol=0, atol=1e-6)
    assert window.shape == (2, 6, 15)
    # the state after all 11 tokens is the last 4 inputs; after 2 tokens, zeros then the 2 inputs
    torch.testing.assert_close(conv_state_after(window, 11, 4), x[..., -4:], rtol=0, atol=0)
    torch.testing.assert_close(conv_state_after(window, 2, 4)[..., :2], torch.zeros(2, 6, 2), rtol=0, atol=0)
    torch.testing.assert_close(conv_state_after(window, 2, 4)[..., 2:], x[..., :2], rtol=0, atol=0)


def test_conv_single_token_equals_transformers_update():
    x, w, b, state = rnd(3, 5, 1), rnd(5, 4), rnd(5), rnd(3, 5, 4)
    ref_state = state.clone()
    ref = HJ.causal_conv1d_update(x, ref_state, w, b, activation="silu")
    y, window = causal_conv1d(x, state, w, b)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(conv_state_after(window, 1, 4), ref_state, rtol=0, atol=0)


@pytest.mark.parametrize("cut", [1, 3, 9])
def test_conv_split_anywhere_continues_exactly(cut):
    x, w = rnd(1, 4, 12), rnd(4, 3)
    whole, _ = causal_conv1d(x, torch.zeros(1, 4, 3), w, None, act=None)
    y1, win = causal_conv1d(x[..., :cut], torch.zeros(1, 4, 3), w, None, act=None)
    y2, _ = causal_conv1d(x[..., cut:], conv_state_after(win, cut, 3), w, None, act=None)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=0, atol=1e-6)


def test_conv_rejects_state_of_wrong_length():
    with pytest.raises(ValueError, match="does not fit"):
        causal_conv1d(rnd(1, 4, 5), torch.zeros(1, 4, 2), rnd(4, 3), None)


# -- Mamba-1 -------------------------------------------------------------
def s6_inputs(b=2, d=6, n=4, L=70):
    # L > SCAN_BLOCK so the blocked discretisation is crossed
    return dict(u=rnd(b, d, L), dt=rnd(b, d, L), A=-torch.rand(d, n, generator=G) * 2, B=rnd(b, L, n),
                C=rnd(b, L, n), D=rnd(d), z=rnd(b, d, L), dt_bias=rnd(d, scale=0.5))


def hf_s6(a, sl=slice(None)):
    return HJ.mamba_selective_scan(a["u"][..., sl], a["dt"][..., sl], a["A"], a["B"][:, sl].transpose(1, 2),
                                   a["C"][:, sl].transpose(1, 2), D=a["D"], z=a["z"][..., sl],
                                   delta_bias=a["dt_bias"], delta_softplus=True, return_last_state=True)


def test_selective_scan_equals_transformers_and_keeps_prefix_states():
    a = s6_inputs()
    ref_y, ref_state = hf_s6(a)
    y, state, kept = selective_scan(**a, state=torch.zeros(2, 6, 4), keep=[5, 64, 70])
    torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-5)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-5)
    assert sorted(kept) == [5, 64, 70]
    torch.testing.assert_close(kept[5], hf_s6(a, slice(0, 5))[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(kept[64], hf_s6(a, slice(0, 64))[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(kept[70], state, rtol=0, atol=0)


def test_selective_scan_one_token_equals_transformers_state_update():
    a = s6_inputs(L=1)
    start = rnd(2, 6, 4)
    ref_state = start.clone()
    ref = HJ.mamba_selective_state_update(ref_state, a["u"][..., 0], a["dt"][..., 0], a["A"], a["B"][:, 0],
                                          a["C"][:, 0], a["D"], z=a["z"][..., 0], dt_bias=a["dt_bias"],
                                          dt_softplus=True)
    y, state, _ = selective_scan(**a, state=start)
    torch.testing.assert_close(y[..., 0], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-6)


def test_selective_scan_continues_from_its_state():
    a = s6_inputs(L=20)
    whole, final, _ = selective_scan(**a, state=torch.zeros(2, 6, 4))
    first = {k: (v[:, :, :7] if k in ("u", "dt", "z") else v[:, :7] if k in ("B", "C") else v) for k, v in a.items()}
    rest = {k: (v[:, :, 7:] if k in ("u", "dt", "z") else v[:, 7:] if k in ("B", "C") else v) for k, v in a.items()}
    y1, s1, _ = selective_scan(**first, state=torch.zeros(2, 6, 4))
    y2, s2, _ = selective_scan(**rest, state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], -1), whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(s2, final, rtol=0, atol=1e-6)


def test_selective_scan_rejects_keep_outside_chunk():
    with pytest.raises(ValueError, match="keep positions"):
        selective_scan(**s6_inputs(L=4), state=torch.zeros(2, 6, 4), keep=[5])
    with pytest.raises(ValueError, match="keep positions"):
        selective_scan(**s6_inputs(L=4), state=torch.zeros(2, 6, 4), keep=[0])


# -- Mamba-2 -------------------------------------------------------------
def ssd_inputs(b=2, L=37, H=4, P=3, Gr=2, N=5):
    return dict(x=rnd(b, L, H, P), dt=rnd(b, L, H), A=-torch.rand(H, generator=G) * 2, B=rnd(b, L, Gr, N),
                C=rnd(b, L, Gr, N), D=rnd(H), dt_bias=rnd(H, scale=0.5))


def hf_ssd(a, state, sl=slice(None), chunk=8):
    return HB.mamba2_chunk_scan(a["x"][:, sl], a["dt"][:, sl], a["A"], a["B"][:, sl], a["C"][:, sl], chunk_size=chunk,
                                D=a["D"], dt_bias=a["dt_bias"], initial_states=state, dt_softplus=True,
                                return_final_states=True)


def test_ssd_scan_equals_transformers_chunk_scan_from_a_state():
    a = ssd_inputs()
    start = rnd(2, 4, 3, 5)
    ref_y, ref_state = hf_ssd(a, start)
    y, state, kept = ssd_scan(**a, state=start, chunk=8, keep=[3, 20])
    torch.testing.assert_close(y, ref_y, rtol=0, atol=1e-4)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-4)
    torch.testing.assert_close(kept[3], hf_ssd(a, start, slice(0, 3))[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(kept[20], hf_ssd(a, start, slice(0, 20))[1], rtol=0, atol=1e-4)


def test_ssd_scan_chunk_size_does_not_change_results():
    a = ssd_inputs(L=29)
    y4, s4, _ = ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=4)
    y64, s64, _ = ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=64)
    torch.testing.assert_close(y4, y64, rtol=0, atol=1e-4)
    torch.testing.assert_close(s4, s64, rtol=0, atol=1e-4)


def test_ssd_step_equals_transformers_state_update_and_scan_of_one():
    a = ssd_inputs(L=1)
    start = rnd(2, 4, 3, 5)
    P, N = 3, 5
    ref_state = start.clone()
    ref = HB.mamba2_selective_state_update(
        ref_state, a["x"][:, 0], a["dt"][:, 0, :, None].expand(-1, -1, P), a["A"][:, None, None].expand(-1, P, N),
        a["B"][:, 0], a["C"][:, 0], a["D"][:, None].expand(-1, P), dt_bias=a["dt_bias"][:, None].expand(-1, P),
        dt_softplus=True)
    y, state = ssd_step(a["x"][:, 0], a["dt"][:, 0], a["A"], a["B"][:, 0], a["C"][:, 0], a["D"], a["dt_bias"], start)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-6)
    y1, s1, _ = ssd_scan(**a, state=start, chunk=8)
    torch.testing.assert_close(y1[:, 0], y, rtol=0, atol=1e-6)
    torch.testing.assert_close(s1, state, rtol=0, atol=1e-6)


def test_ssd_dt_limit_clamps_the_step():
    a = ssd_inputs(L=6)
    free, _, _ = ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=4)
    capped, _, _ = ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=4, dt_limit=(0.0, 0.05))
    ref = HB.mamba2_chunk_scan(a["x"], a["dt"], a["A"], a["B"], a["C"], chunk_size=4, D=a["D"],
                               dt_bias=a["dt_bias"], dt_softplus=True, dt_limit=(0.0, 0.05))
    torch.testing.assert_close(capped, ref, rtol=0, atol=1e-5)
    assert (capped - free).abs().max() > 1e-2


def test_ssd_rejects_bad_chunk_and_groups():
    a = ssd_inputs(L=4)
    with pytest.raises(ValueError, match="chunk must be > 0"):
        ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=0)
    a["B"], a["C"] = rnd(2, 4, 3, 5), rnd(2, 4, 3, 5)      # 3 groups do not divide 4 heads
    with pytest.raises(ValueError, match="not a multiple of 3 groups"):
        ssd_scan(**a, state=torch.zeros(2, 4, 3, 5), chunk=4)
