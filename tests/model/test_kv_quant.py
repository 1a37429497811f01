"""fp8 K/V storage: scaled, saturated, read back in the compute dtype."""

import torch

from jenga.model.kv_quant import dequantize, is_quantized, quantize


def test_round_trip_within_fp8_precision_and_saturation():
    x = torch.tensor([0.0, 0.1, -1.5, 3.0, 1000.0, -1e6])
    q = quantize(x, torch.float8_e4m3fn, scale=2.0)
    assert q.dtype == torch.float8_e4m3fn and is_quantized(q)
    back = dequantize(q, torch.float32, scale=2.0)
    assert torch.isfinite(back).all()
    torch.testing.assert_close(back[:4], x[:4], rtol=0.07, atol=1e-3)    # 3 mantissa bits
    assert back[4] == 896.0 and back[5] == -896.0                         # 448 * 2: saturated, not inf/NaN
    e5 = dequantize(quantize(x, torch.float8_e5m2), torch.float32)
    assert e5[5] == -57344.0 and torch.isfinite(e5).all()


def test_compute_dtype_caches_are_plain_casts():
    x = torch.randn(4, 3)
    assert torch.equal(dequantize(quantize(x, torch.float32), torch.float32), x)
    assert not is_quantized(x) and quantize(x, torch.bfloat16).dtype == torch.bfloat16
