"""The issue-12 GPU benchmark (Jenga vs transformers generate and
generate_batch) runs end to end in its CPU dry run: tiny models, one
repeat, every system measured or its refusal recorded.  Two of the three
models keep it short: the Llama shape (every system serves it) and the
Jamba one (transformers' continuous batching refuses its hybrid cache);
Gemma-2 differs from Llama only in its config."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_measures_every_system(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/gpu_bench_transformers.py"), "--dry-run", "--out",
                           str(tmp_path), "--models", "llama-3.2-1b,jamba"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu-bench-transformers.json").read_text())
    by = {(r["model"], r["system"]): r for r in rows}
    models = ("llama-3.2-1b", "jamba")
    systems = ("jenga", "jenga-eager", "hf-generate", "hf-generate-batch")
    assert set(by) == {(m, s) for m in models for s in systems}
    for m in models:
        for s in ("jenga", "jenga-eager", "hf-generate"):
            r = by[(m, s)]
            assert "error" not in r, (m, s, r.get("error"))
            assert len(r["runs"]) == 1 and r["runs"][0]["output_tokens"] == 4 * 4 and r["output_tok_per_s"] > 0
        assert by[(m, "jenga")]["graph_steps"] == 0          # no CUDA: the engine runs eagerly
        hb = by[(m, "hf-generate-batch")]
        assert ("output_tok_per_s" in hb) != ("error" in hb)   # measured, or its refusal recorded
    assert "output_tok_per_s" in by[("llama-3.2-1b", "hf-generate-batch")]
    assert "| llama-3.2-1b | jenga |" in (tmp_path / "gpu-bench-transformers.md").read_text()
