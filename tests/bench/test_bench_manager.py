"""`jenga bench manager`: the timed loops drive exactly the decode steps
they claim to (timings themselves are not asserted)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from jenga.bench import manager as bench


def test_measure_times_decode_steps_of_every_running_request(monkeypatch):
    seen = {}
    real = bench._manager_only

    def spy(sched, steps):
        before = {r.req_id: r.num_computed for r in sched.running}
        out = real(sched, steps)
        seen.update(steps=steps, advanced={r.req_id: r.num_computed - before[r.req_id] for r in sched.running})
        sched.manager.check_invariants()
        return out

    monkeypatch.setattr(bench, "_manager_only", spy)
    cost = bench.measure("gemma-2-9b", 12, prompt_len=40, steps=5)
    assert (cost.running, cost.steps) == (12, 5)
    assert seen == {"steps": 5, "advanced": {f"r{i}": 5 for i in range(12)}}
    assert min(cost.schedule_ms, cost.update_ms, cost.manager_ms) > 0 and cost.gc_ms >= 0


def test_json_rows_name_every_column(capsys):
    args = SimpleNamespace(running="4", model="gemma-2-9b", prompt_len=20, steps=2, allocator="jenga", json=True)
    assert bench.main(args) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row) == {"running", "steps", "schedule_ms", "update_ms", "manager_ms", "gc_ms", "step_ms",
                        "us_per_request"} and row["running"] == 4
