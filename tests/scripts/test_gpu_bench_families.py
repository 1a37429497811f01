"""The issue-4 GPU benchmark script runs end to end in its CPU dry run
(six models x four allocators through the real engine: about four minutes
on the 2-core CI machine, so a slow test, JENGA_SLOW=1)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("JENGA_SLOW") != "1", reason="slow: set JENGA_SLOW=1")
@pytest.mark.slow
def test_dry_run_writes_a_table_per_family(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([sys.executable, str(ROOT / "scripts/gpu_bench_families.py"), "--dry-run", "--out",
                    str(tmp_path)], check=True, env=env, capture_output=True, timeout=600)
    report = json.loads((tmp_path / "gpu-families.json").read_text())
    assert set(report) == {"gemma2-9b", "ministral-8b", "jamba", "bamba", "mllama", "llava"}
    for rows in report.values():
        jenga = next(r for r in rows if r["allocator"] == "jenga")
        assert jenga["errors"] == 0 and jenga["requests"] == 8
