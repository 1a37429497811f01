"""scripts/bench_speculative.py on a very small pair: it runs, the outputs
with speculation equal the plain engine's, and a draft cut from a target
whose later layers are silenced is always accepted."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_speculative as bench  # noqa: E402


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_layer_skip_draft_keeps_the_named_layers(tmp_path):
    bench.tiny_target(tmp_path / "t", layers=3, hidden=64, damp=1.0, seed=0)
    bench.layer_skip_draft(tmp_path / "t", tmp_path / "d", [0, 2])
    from safetensors.torch import load_file
    t, d = load_file(str(tmp_path / "t" / "model.safetensors")), load_file(str(tmp_path / "d" / "model.safetensors"))
    assert json.loads((tmp_path / "d" / "config.json").read_text())["num_hidden_layers"] == 2
    assert torch.equal(d["model.layers.1.mlp.up_proj.weight"], t["model.layers.2.mlp.up_proj.weight"])
    assert not any(".layers.2." in k for k in d) and torch.equal(d["lm_head.weight"], t["lm_head.weight"])
    with pytest.raises(ValueError, match="keep must name layers of the 3-layer target"):
        bench.layer_skip_draft(tmp_path / "t", tmp_path / "e", [3])


def test_bench_runs_and_a_silenced_target_accepts_everything(tmp_path):
    out = tmp_path / "rows.json"
    rc = bench.main(["--layers", "2", "--hidden", "64", "--damp", "0", "--k", "2", "--concurrency", "1",
                     "--num-prompts", "2", "--max-tokens", "8", "--repeat", "1", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert rc == 0 and [(r["k"], r["same_output"]) for r in rows] == [(0, True), (2, True)]
    assert rows[0]["acceptance"] is None and rows[1]["acceptance"] == 1.0
    # per prompt: 1 token from the prefill, then 3 per step for 7 tokens (3 steps)
    assert rows[0]["steps_per_run"] == 16 and rows[1]["steps_per_run"] == 2 * (1 + 3)
