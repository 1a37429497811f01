"""The Triton paged-decode kernel against the dense reference, through
paged_attention(backend="triton") on the same poisoned, scattered pools as
the portable path.  Runs on CUDA, or on CPU under TRITON_INTERPRET=1;
skipped where triton is not installed (the default CPU environment)."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # must be set before triton is imported

from test_attention import CASES, MIXED, run_case  # noqa: E402

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
