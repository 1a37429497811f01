"""scripts/bench_parallel_sampling.py on a tiny case: n=2 children compute
the prompt once and hold less than two separate requests, with the same
greedy tokens."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_parallel_sampling as bench  # noqa: E402


def test_n_children_compute_the_prompt_once(tmp_path):
    rows = bench.measure("gemma2", tmp_path, [2], repeats=1, prompt_len=40, output_len=2, kv_bytes=8 << 20)
    by_way = {r["way"]: r for r in rows}
    assert set(by_way) == {"n=k", "k separate"}
    # 40-token prompt, 16-token pages: the sibling hits 32 tokens and computes 8
    assert (by_way["n=k"]["computed"], by_way["k separate"]["computed"]) == (48, 80)
    assert by_way["n=k"]["peak"] < by_way["k separate"]["peak"]
    assert "| gemma2 | 2 | n=k |" in bench.table(rows)
