"""The parts of scripts/compare_vllm_manager.py that need no vLLM: the model
shapes and hand-built plans, the argument checks, the report, and the clear
exit when vLLM is missing (the project's environment has none)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import compare_vllm_manager as cvm  # noqa: E402
from compare_replay import Result  # noqa: E402

GIB = 1 << 30


def test_gemma2_hand_plan_has_two_equal_groups():
    plan = cvm.hand_plan(cvm.gemma2_shape(), 16 * GIB)
    # 16 tokens x 8 heads x 256 x 2 (K, V) x 2 B x 21 layers = 2,752,512 B per small page
    assert [(g.kind, len(g.layers), g.page_tokens, g.small_page_bytes, g.per_large) for g in plan.groups] == [
        ("sliding", 21, 16, 2752512, 1), ("full", 21, 16, 2752512, 1)]
    assert plan.groups[0].spec.window == 4096 and plan.groups[0].layers[:2] == (0, 2)
    assert (plan.large_page_bytes, plan.num_large_pages) == (2752512, 16 * GIB // 2752512)


def test_jamba_hand_plan_uses_the_lcm_of_state_and_token_pages():
    plan = cvm.hand_plan(cvm.jamba_shape(), GIB)
    # one Mamba state: (3 x 8192 + 8192 x 16) x 2 B = 311,296 B; 28 layers -> 8,716,288 B = 2^16 x 133;
    # 16 tokens x 8 x 128 x 2 x 2 B x 4 layers = 262,144 B = 2^18; LCM = 2^18 x 133
    assert [(g.kind, len(g.layers), g.small_page_bytes, g.per_large) for g in plan.groups] == [
        ("mamba", 28, 8716288, 4), ("full", 4, 262144, 133)]
    assert plan.groups[1].layers == (4, 12, 20, 28)
    assert (plan.large_page_bytes, plan.num_large_pages) == (34865152, 30)


@pytest.mark.parametrize("argv", [["--models", "llama"], ["--budget-gib", "0"], ["--token-budget", "-1"],
                                  ["--repeats", "0"], ["--jenga-mamba-interval", "0"], ["--doc-len", "9"],
                                  ["--doc-len", "70,60"], ["--doc-len", "0,5"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cvm.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_default_budgets_are_per_model():
    args = cvm.parse_args([])
    assert args.models == "gemma2,jamba" and args.budget_gib is None and args.doc_len == (2000, 7000)
    assert {k: v[2] for k, v in cvm.SHAPES.items()} == {"gemma2": 16.0, "jamba": 1.0}
    assert args.jenga_mamba_interval is None                      # the manager's auto interval
    assert cvm.parse_args(["--jenga-mamba-interval", "512"]).jenga_mamba_interval == 512


def test_report_lays_out_one_column_per_manager():
    a = Result("vllm", 4 * GIB, steps=10, busy_steps=4, peak_used=2 * GIB, sum_used=4 * GIB, sum_batch=10,
               prompt_tokens=200, hit_tokens=50, preemptions=3, fail_used=[GIB, 3 * GIB],
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
    assert lines["allocate: us/step (calls)"] == ["100.0 (7)", "0.0 (0)"]
    assert lines["of which block hashing: us/step"] == ["50.0", "not split out"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_exits_with_a_clear_message_without_vllm(capsys):
    with pytest.raises(SystemExit) as exc:
        cvm.main(["--models", "gemma2", "--docs", "1", "--questions", "1", "--shorts", "1"])
    assert "vLLM is not importable" in str(exc.value.code)
    assert "/work/vllm-venv/bin/python" in str(exc.value.code)
