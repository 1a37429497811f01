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


def test_vllm_datasets_have_their_shapes():
    r = make_workload("random", 20, seed=1, vocab_size=320, input_len=100, output_len=10, range_ratio=0.5,
                      prefix_len=8)
    assert all(8 + 50 <= q.prompt_len <= 8 + 150 and 5 <= q.output_len <= 15 for q in r)
    assert len({q.prompt[:8] for q in r}) == 1 and len({q.prompt[8:] for q in r}) == 20
    p = make_workload("prefix-repetition", 6, seed=1, vocab_size=320, prefix_len=16, suffix_len=4,
                      num_prefixes=2, output_len=3)
    assert [q.prompt_len for q in p] == [20] * 6 and {q.output_len for q in p} == {3}
    assert p[0].prompt[:16] == p[2].prompt[:16] != p[1].prompt[:16] and p[0].prompt[16:] != p[2].prompt[16:]
    assert {q.output_len for q in make_workload("sharegpt", 5, sharegpt_output_len=7)} == {7}
    with pytest.raises(ValueError, match="random_range_ratio"):
        make_workload("random", 2, range_ratio=1.5)


def test_report_prints_as_vllm_does():
    results = [RequestResult(True, 10, 3, 0.1, 0.02, 0.2, itl_s=(0.01, 0.03)), RequestResult(True, 20, 1, 0.3, 0.0, 0.3)]
    text = summarize(results, duration_s=2.0).table()
    lines = text.splitlines()
    assert lines[0] == "=" * 12 + " Serving Benchmark Result " + "=" * 12
    assert "Total Token throughput (tok/s):         17.00" in text
    assert "Median ITL (ms):                        10.00" in text and "P99 E2EL (ms):" in text
    assert lines[-1] == "=" * 50


def test_cli_takes_vllm_flags(tmp_path, capsys):
    import argparse

    from jenga.bench.serve_client import _dataset_args, add_args
    p = argparse.ArgumentParser()
    add_args(p)
    a = p.parse_args(["--dataset-name", "random", "--num-prompts", "50", "--request-rate", "4", "--max-concurrency",
                      "8", "--random-input-len", "32", "--save-result", "--result-dir", str(tmp_path)])
    assert (a.workload, a.num_requests, a.rate, a.concurrency) == ("random", 50, 4.0, 8)
    assert _dataset_args(a) == {"input_len": 32, "output_len": 128, "range_ratio": 0.0, "prefix_len": 0}
    assert p.parse_args(["--request-rate", "inf"]).rate == float("inf")
    assert p.parse_args(["--workload", "fixed", "--num-requests", "3"]).num_requests == 3   # Jenga's old names
