"""The Triton paged-decode kernel against the dense reference, through
paged_attention(backend="triton") on the same poisoned, scattered pools as
the portable path.  Runs on CPU under TRITON_INTERPRET=1 (set by
tests/conftest.py before triton is imported); triton is in the
test extra, so this is skipped only where no triton wheel exists."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")
assert os.environ.get("TRITON_INTERPRET") == "1", "tests/conftest.py sets the interpreter"

from test_attention import CASES, MIXED, run_case

DECODES = [(5, 1), (12, 1), (29, 1), (3, 1), (17, 1)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_matches_dense_reference(name):
    case = dict(CASES[name])
    case["seqs"] = DECODES if case["seqs"] is MIXED or len(case["seqs"]) > 3 else case["seqs"]
    ours, ref = run_case(**case, backend="triton")
    assert not torch.isnan(ours).any()
    assert (ours.double() - ref).abs().max().item() < 1e-5


def test_mixed_batch_routes_decodes_to_triton():
    ours, ref = run_case(MIXED, 4, group_window=6, window=6, backend="triton")
    assert (ours.double() - ref).abs().max().item() < 1e-5
