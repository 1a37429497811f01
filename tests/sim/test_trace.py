"""JSONL traces: round trips, named segments, and errors naming line and field."""

from __future__ import annotations

import json

import pytest

from jenga.memory.types import ImageRef
from jenga.sim.runner import TOKEN_LOW
from jenga.sim.trace import (Segment, TraceError, TraceRequest, dump_trace, expand, load_trace,
                             segment_tokens)
from jenga.sim.workloads import arxiv_qa, mmmu_pro, multiturn


def test_named_segments_are_stable_prefixes():
    long = segment_tokens("doc", 9000)
    assert len(long) == 9000 and long[:4100] == segment_tokens("doc", 4100)
    assert long[:10] != segment_tokens("doc2", 10)
    assert min(long) >= TOKEN_LOW and max(long) < 32000
    assert max(segment_tokens("doc", 500, 100)) < 100
    assert expand((Segment("doc", 3), Segment("", 2, (5, 6)))) == long[:3] + (5, 6)


@pytest.mark.parametrize("reqs", [arxiv_qa(6, seed=1, max_doc=5000, rate=3.0),
                                  mmmu_pro(3, seed=2, inline_images=True), multiturn(4, seed=3, turns=2)])
def test_round_trip_of_workloads(tmp_path, reqs):
    path = tmp_path / "t.jsonl"
    dump_trace(reqs, path)
    assert load_trace(path) == reqs
    # documents stay segments, so the file is small
    assert path.stat().st_size < 2000 * len(reqs) + 8 * sum(r.output_len for r in reqs)


def test_round_trip_of_explicit_tokens(tmp_path):
    reqs = [TraceRequest(0.5, (1, 2, 3), 7, (ImageRef(1, 10, "cat"),), cache_salt="s", req_id="x"),
            TraceRequest(2.0, (9,), 1)]
    path = tmp_path / "t.jsonl"
    dump_trace(reqs, path)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0] == {"arrival": 0.5, "id": "x", "token_ids": [1, 2, 3],
                        "images": [{"position": 1, "num_tokens": 10, "hash": "cat"}], "output_len": 7, "salt": "s"}
    assert load_trace(path) == reqs


def test_hand_written_segments_expand(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"arrival": 0, "prompt": [{"segment": "sys", "len": 5}, {"tokens": [7, 8]}], "output_len": 3}\n'
                    '\n'
                    '{"arrival": 1, "prompt": [{"segment": "sys", "len": 5}, {"tokens": [9]}], "output_len": 3}\n')
    a, b = load_trace(path)
    assert a.prompt[:5] == b.prompt[:5] == segment_tokens("sys", 5)
    assert a.prompt[5:] == (7, 8) and b.prompt[5:] == (9,)


BAD = [
    ('{"arrival": 0, "token_ids": [1], "output_len": 0}', "output_len"),
    ('{"arrival": -1, "token_ids": [1], "output_len": 2}', "arrival"),
    ('{"token_ids": [1], "output_len": 2}', "'arrival' is missing"),
    ('{"arrival": 0, "output_len": 2}', "token_ids"),
    ('{"arrival": 0, "token_ids": [1], "prompt": [{"tokens": [1]}], "output_len": 2}', "token_ids"),
    ('{"arrival": 0, "token_ids": [1, "a"], "output_len": 2}', "token_ids"),
    ('{"arrival": 0, "prompt": [{"segment": "s", "len": 0}], "output_len": 2}', r"prompt\[0\].len"),
    ('{"arrival": 0, "prompt": [{"segment": "s"}], "output_len": 2}', r"prompt\[0\]"),
    ('{"arrival": 0, "token_ids": [1], "output_len": 2, "images": [{"position": 3, "num_tokens": 2, "hash": "h"}]}',
     "images"),
    ('{"arrival": 0, "token_ids": [1], "output_len": 2, "images": [{"position": 0, "num_tokens": 0, "hash": "h"}]}',
     r"images\[0\].num_tokens"),
    ('{"arrival": 0, "token_ids": [1], "output_len": 2, "colour": 1}', "unknown field 'colour'"),
    ('{"arrival": 0, "token_ids": [1], "output_len": 2, "salt": 5}', "salt"),
    ('[1, 2]', "JSON object"),
    ('{"arrival": 0, ', "not valid JSON"),
]


@pytest.mark.parametrize("line,match", BAD)
def test_errors_name_line_and_field(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"arrival": 0, "token_ids": [1], "output_len": 2}\n' + line + "\n")
    with pytest.raises(TraceError, match=match) as e:
        load_trace(path)
    assert str(e.value).startswith(f"{path}:2: ")


def test_duplicate_ids_name_both_lines(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = '{"arrival": 0, "id": "a", "token_ids": [1], "output_len": 2}\n'
    path.write_text(row + row)
    with pytest.raises(TraceError, match=r":2: field 'id': 'a' already used on line 1"):
        load_trace(path)


def test_trace_request_validation_names_fields():
    with pytest.raises(ValueError, match="output_len"):
        TraceRequest(0.0, (1,), 0)
    with pytest.raises(ValueError, match="arrival_time"):
        TraceRequest(float("nan"), (1,), 1)
    with pytest.raises(ValueError, match="prompt"):
        TraceRequest(0.0, (), 1)
    with pytest.raises(ValueError, match="segments"):
        TraceRequest(0.0, (1, 2), 1, segments=(Segment("a", 3),))
