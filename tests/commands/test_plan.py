"""`jenga plan` reproduces the paper's waste figures from model shapes alone."""

from __future__ import annotations

import json

import pytest

from jenga.cli import main
from jenga.commands.plan import compute


@pytest.mark.parametrize("model, context, images, max_page_waste", [
    ("llama-3.2-11b-vision", 43, 6193, 0.796),   # MMMU-pro-sized request
    ("ministral-8b", 131072, 0, 0.5625),
    ("gemma-2-9b", 8192, 0, 0.25),
])
def test_paper_waste_figures(model, context, images, max_page_waste):
    rep = compute(model, context, images)
    assert rep["requests"]["max-page"]["waste"] == pytest.approx(max_page_waste, abs=5e-4)
    assert rep["requests"]["jenga"]["waste"] < 0.005
    assert rep["requests"]["jenga"]["max_concurrent"] > rep["requests"]["max-page"]["max_concurrent"]


def test_cli_json_and_errors(capsys):
    assert main(["plan", "gemma-2-9b", "--context", "8192", "--json", "--allocator", "jenga"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["requests"]) == {"jenga"} and rep["layers"] == {"sliding(window=4096)": 21, "full": 21}
    assert main(["plan", "gemma-2-9b", "--context", "999999"]) == 2
    assert "--context" in capsys.readouterr().err
    assert main(["plan", "no-such-model"]) == 2
    assert main(["plan", "gemma-2-9b", "--allocator", "magic"]) == 2
    assert "unknown allocator" in capsys.readouterr().err


def test_kv_cache_dtype_fp8_doubles_concurrency_and_mixed_dtypes_cost_no_waste(capsys):
    bf16 = compute("gemma-2-9b", 8192, allocators="jenga,max-page")
    fp8 = compute("gemma-2-9b", 8192, allocators="jenga,max-page", kv_cache_dtype="fp8")
    assert fp8["requests"]["jenga"]["max_concurrent"] == 2 * bf16["requests"]["jenga"]["max_concurrent"] == 50
    assert fp8["requests"]["jenga"]["allocated_bytes"] * 2 == bf16["requests"]["jenga"]["allocated_bytes"]
    mixed = compute("gemma-2-9b", 8192, allocators="jenga,max-page", kv_cache_dtype="full=fp8,sliding=auto")
    assert [g["small_page_bytes"] for g in mixed["plans"]["jenga"]["groups"]] == [2752512, 1376256]
    assert mixed["requests"]["jenga"]["waste"] == 0.0 and mixed["requests"]["max-page"]["waste"] == 0.5
    assert main(["plan", "gemma-2-9b", "--kv-cache-dtype", "fp4"]) == 2
    assert "kv_cache_dtype: unknown dtype 'fp4'" in capsys.readouterr().err


def rep_weights() -> int:
    from jenga.memory.shapes.presets import get_preset
    return get_preset("llama-4-scout").weights_bytes


def test_max_context_llama4_scout_on_8_h100(capsys):
    """Paper Table 2: keeping only the current 8192-token chunk in 36 of 48
    layers fits ~4x the context of storing every token in every layer.
    Per rank (the plan the engine builds for each of the 8 GPUs): KV budget
    80 GB x 0.9 - 217.3 / 8 GB of weights = 44.8 GB; jenga and uniform: 12
    global layers x 512 B/token (bf16 K+V, 1 of the 8 heads of 128) after
    the chunked group's peak (36 layers x (8191 + 2048) tokens); max-page:
    all 48 layers x 512 B/token."""
    rep = compute("llama-4-scout", gpu="H100", tp=8, max_context=True)
    longest = rep["max_context"]
    assert set(longest) == {"jenga", "max-page", "uniform"}       # static's split is per request
    budget = rep["kv_budget_bytes"]
    assert budget == 80 * 10**9 * 0.9 - rep_weights() / 8
    assert longest["max-page"] == pytest.approx(budget / (48 * 512), rel=1e-4)
    assert longest["jenga"] == pytest.approx((budget - 36 * 512 * 10240) / (12 * 512), rel=1e-4)
    assert longest["uniform"] == longest["jenga"] == 7_267_232
    assert 3.9 < longest["jenga"] / longest["max-page"] < 4.0
    assert main(["plan", "llama-4-scout", "--tp", "8", "--gpu", "H200", "--max-context"]) == 0
    out = capsys.readouterr().out
    assert "longest single request on 8 x H200" in out and "16,202,816" in out
    assert main(["plan", "llama-4-scout", "--tp", "8", "--max-context", "--prefill-chunk", "0"]) == 2
    assert "--prefill-chunk" in capsys.readouterr().err
