"""`jenga bench serve`: workload generation, statistics, and a run against
the real server with the tiny model."""

from __future__ import annotations

import json

import pytest

from jenga.bench.serve_client import Percentiles, RequestResult, bench_serve, make_workload, summarize


def test_percentiles_use_nearest_rank():
    p = Percentiles.of([float(v) for v in range(1, 101)])
    assert (p.mean, p.p50, p.p90, p.p99) == (50.5, 50.0, 90.0, 99.0)
    assert Percentiles.of([7.0]) == Percentiles(7.0, 7.0, 7.0, 7.0)
    assert Percentiles.of([]) == Percentiles(0.0, 0.0, 0.0, 0.0)


def test_summary_counts_only_successes():
    results = [RequestResult(True, 10, 5, 0.1, 0.02, 0.2), RequestResult(True, 20, 1, 0.3, 0.0, 0.3),
               RequestResult(False, error="HTTP 503: full")]
    r = summarize(results, duration_s=2.0)
    assert (r.completed, r.failed, r.total_prompt_tokens, r.total_output_tokens) == (2, 1, 30, 6)
    assert r.request_throughput == 1.0 and r.output_throughput == 3.0
    assert r.ttft_ms.p50 == pytest.approx(100.0) and r.ttft_ms.p99 == pytest.approx(300.0)
    assert r.tpot_ms == Percentiles.of([20.0])   # one-token requests have no TPOT
    assert r.errors == ("HTTP 503: full",)


def test_workloads_are_reproducible_and_clipped(tmp_path):
    a = make_workload("sharegpt", 50, seed=3, vocab_size=320, max_prompt=64, max_output=32)
    assert a == make_workload("sharegpt", 50, seed=3, vocab_size=320, max_prompt=64, max_output=32)
    assert a != make_workload("sharegpt", 50, seed=4, vocab_size=320, max_prompt=64, max_output=32)
    assert all(4 <= r.prompt_len <= 64 and 4 <= r.output_len <= 32 for r in a)
    assert all(16 <= t < 320 for r in a for t in r.prompt)
    fixed = make_workload("fixed", 3, input_len=7, output_len=5, rate=2.0)
    assert [(r.prompt_len, r.output_len) for r in fixed] == [(7, 5)] * 3
    assert 0 < fixed[0].arrival_time < fixed[1].arrival_time < fixed[2].arrival_time
    assert len({r.prompt for r in fixed}) == 3
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"arrival": 0.5, "token_ids": [20, 21, 22], "output_len": 3}) + "\n\n" +
                     json.dumps({"arrival": 1, "prompt": [{"segment": "doc", "len": 4}], "output_len": 2}) + "\n")
    got = make_workload(str(trace), 10, vocab_size=320)
    assert (got[0].prompt, got[0].output_len, got[0].arrival_time) == ((20, 21, 22), 3, 0.5)
    assert got[1].prompt_len == 4 and got[1].output_len == 2
    with pytest.raises(ValueError, match="workload"):
        make_workload("nope", 3)
    with pytest.raises(ValueError, match="images"):
        make_workload("mmmu_pro", 2)


def test_bench_against_the_tiny_server(make_engine):
    from live import LiveServer

    server = LiveServer(make_engine(), api_key="k")
    try:
        report = bench_serve(server.base_url, "fixed", num_requests=8, concurrency=4, api_key="k",
                             vocab_size=320, progress=False, input_len=6, output_len=5)
        assert (report.completed, report.failed) == (8, 0)
        assert report.total_output_tokens == 40 and report.total_prompt_tokens == 48
        assert 0 < report.ttft_ms.p50 <= report.ttft_ms.p90 <= report.ttft_ms.p99 <= report.e2e_ms.p99
        assert report.request_throughput > 0 and report.output_throughput > 0
        refused = bench_serve(server.base_url, "fixed", num_requests=2, model="tiny", progress=False,
                              vocab_size=320, input_len=3, output_len=2)   # no key
        assert refused.completed == 0 and refused.failed == 2 and refused.errors[0].startswith("HTTP 401")
    finally:
        server.stop()
