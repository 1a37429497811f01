"""The parts of scripts/compare_vllm_manager.py that need no vLLM: the traces'
settings, the argument checks, the report, and the clear exit when vLLM is
missing (the project's environment has none)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import compare_vllm_manager as cvm  # noqa: E402
from compare_replay import Result  # noqa: E402

GIB = 1 << 30


@pytest.mark.parametrize("argv", [["--traces", "llama"], ["--budget-gib", "0"], ["--token-budget", "-1"],
                                  ["--repeats", "0"], ["--jenga-mamba-interval", "0"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cvm.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_defaults_run_every_trace_with_variants():
    args = cvm.parse_args([])
    assert args.traces.split(",") == ["docs", "system", "chats", "unique"] and args.budget_gib is None
    assert {k: (v[1], v[3]) for k, v in cvm.TRACES.items()} == {
        "docs": ("gemma-3-12b", (12.0, 24.0)), "system": ("jamba-1.5-mini", (1.0,)),
        "chats": ("llama-3.1-8b", (4.0,)), "unique": ("gemma-3-12b", (12.0,))}
    assert args.variants and args.token_budget == 8192 and args.jenga_mamba_interval is None
    assert not cvm.parse_args(["--no-variants"]).variants


def test_report_lays_out_one_column_per_manager():
    a = Result("vllm", 4 * GIB, steps=10, busy_steps=4, peak_used=2 * GIB, sum_used=4 * GIB, sum_batch=10,
               prompt_tokens=200, hit_tokens=50, preemptions=3, fail_used=[GIB, 3 * GIB],
               computed_tokens=170, min_tokens=200, bound_steps=2, bound_need=1.5,
               seconds={"allocate": 0.001}, calls={"allocate": 7}, hash_seconds=0.0005)
    b = Result("jenga", 4 * GIB, steps=5, busy_steps=5)
    lines = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")[1:]]
             for line in cvm.report([a, b]).splitlines() if "|" in line}
    assert lines[""] == ["vllm", "jenga"]
    assert lines["peak bytes in use"] == ["2.00 GiB (50.0%)", "0.00 GiB (0.0%)"]
    assert lines["mean bytes in use (busy steps)"] == ["1.00 GiB (25.0%)", "0.00 GiB (0.0%)"]
    assert lines["mean running batch (requests/step)"] == ["2.50", "0.00"]
    assert lines["prefix hit rate (first admission)"][0] == "25.00% (50 tok)"
    assert lines["in use when a running request could not grow"] == ["50.0% (mean of 2)", "never failed"]
    assert lines["manager CPU us/step (all calls)"] == ["100.0", "0.0"]
    assert lines["utilisation when memory binds (needed / pool)"] == ["75.0% (2 steps)", "never bound"]
    assert lines["recomputed tokens"] == ["20", "0"]
    assert lines["allocate: us/step (calls)"] == ["100.0 (7)", "0.0 (0)"]
    assert lines["of which block hashing: us/step"] == ["50.0", "not split out"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_exits_with_a_clear_message_without_vllm(capsys):
    with pytest.raises(SystemExit) as exc:
        cvm.main(["--traces", "system", "--repeats", "1"])
    assert "vLLM is not importable" in str(exc.value.code)
    assert "/work/vllm-venv/bin/python" in str(exc.value.code)
