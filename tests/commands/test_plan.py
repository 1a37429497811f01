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
