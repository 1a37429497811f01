"""Output records: frozen, with derived fields."""

import dataclasses

import pytest

from jenga.engine.outputs import CompletionOutput, DeltaOutput, RequestMetrics, RequestOutput


def test_metrics_ttft():
    assert RequestMetrics(1.0, 1.25, 2.0).ttft == 0.25
    assert RequestMetrics(1.0).ttft is None


def test_outputs_are_frozen_and_report_finish():
    c = CompletionOutput("hi", (5, 6))
    assert not c.finished and CompletionOutput("hi", (5,), "stop").finished
    out = RequestOutput("r", None, (1,), (c,), False, 0, RequestMetrics(0.0), DeltaOutput("hi", (5, 6)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.finished = True
    assert out.outputs[0].text == "hi" and out.delta.token_ids == (5, 6)
