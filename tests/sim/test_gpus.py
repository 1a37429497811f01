"""GPU specs: datasheet numbers, case-insensitive lookup, clear errors."""

from __future__ import annotations

import pytest

from jenga.sim.gpus import GPUSpec, get_gpu


def test_datasheet_numbers():
    h100, h200, l4 = get_gpu("H100"), get_gpu("h200"), get_gpu("L4")
    assert (h100.memory_bytes, h100.peak_flops, h100.hbm_bandwidth) == (80_000_000_000, 989e12, 3.35e12)
    assert (h200.memory_bytes, h200.peak_flops, h200.hbm_bandwidth) == (141_000_000_000, 989e12, 4.8e12)
    assert (l4.memory_bytes, l4.peak_flops, l4.hbm_bandwidth) == (24_000_000_000, 121e12, 0.3e12)


def test_lookup_is_case_insensitive():
    assert get_gpu(" h100 ") is get_gpu("H100")
    assert get_gpu("l4").name == "L4"


def test_unknown_gpu_lists_known_names():
    with pytest.raises(ValueError, match="unknown gpu 'A100'.*H100, H200, L4"):
        get_gpu("A100")


@pytest.mark.parametrize("field", ["memory_bytes", "peak_flops", "hbm_bandwidth"])
def test_spec_rejects_non_positive_fields(field):
    args = dict(name="x", memory_bytes=1, peak_flops=1.0, hbm_bandwidth=1.0)
    args[field] = 0
    with pytest.raises(ValueError, match=field):
        GPUSpec(**args)
