"""The GPU check of the Triton kernels and decode CUDA graphs runs end to
end in its CPU dry run (--interpret: TRITON_INTERPRET=1, tiny shapes, no
capture and no timings; the kernels' full CPU checks are tests/model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_interpret_dry_run_passes_every_check(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_check_attention.py"), "--interpret",
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and all(c["ok"] for c in report["checks"])
    kinds = {c["check"].split()[0] for c in report["checks"]}
    assert kinds == {"decode", "prefill", "end-to-end"}
    assert report["graphs"] == {"captured": [], "runs": 2}
