"""`jenga bench throughput`: seeded workloads, and the engine run per
allocator with encoder runs counted (on a tiny LLaVA built here)."""

import json
import os
import sys

import pytest
import torch

from jenga.bench.throughput import Result, Workload, make_prompts, run_one, table

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "model"))
from vlm_helpers import IMAGE, tiny_llava  # noqa: E402


def test_prompts_are_seeded_and_place_images():
    w = Workload(num_requests=3, prompt_len=10, output_len=2, images=2, image_size=(20, 30), seed=4)
    a, b = make_prompts(w, 300, IMAGE), make_prompts(w, 300, IMAGE)
    for x, y in zip(a, b):
        assert x["prompt_token_ids"] == y["prompt_token_ids"]
        assert all(torch.equal(i, j) for i, j in zip(x["multi_modal_data"]["image"], y["multi_modal_data"]["image"]))
    for p in a:
        ids, images = p["prompt_token_ids"], p["multi_modal_data"]["image"]
        assert len(ids) == 12 and ids.count(IMAGE) == 2 and ids[0] != IMAGE and len(images) == 2
        assert all(i.shape[0] == 3 and 10 <= i.shape[1] <= 20 and i.shape[2] == 30 for i in images)
    # every image distinct by default; drawn from a pool of one, all equal
    assert len({i.sum().item() for p in a for i in p["multi_modal_data"]["image"]}) == 6
    same = make_prompts(Workload(3, 10, 2, 1, distinct_images=1), 300, IMAGE)
    assert len({id(p["multi_modal_data"]["image"][0]) for p in same}) == 1
    assert all(isinstance(p, list) and len(p) == 5 for p in make_prompts(Workload(2, 5, 1, 1), 300, None))


def test_bad_workloads():
    with pytest.raises(ValueError, match="prompt_len must be > 0"):
        Workload(prompt_len=0)
    with pytest.raises(ValueError, match="images"):
        Workload(images=-1)


def test_encoder_runs_per_allocator(tmp_path):
    tiny_llava(tmp_path)
    # prompts of 12 + 15 placeholders; chunks of 8 tokens: max-page re-encodes each image per chunk
    w = Workload(num_requests=2, prompt_len=12, output_len=3, images=1, image_size=(16, 16))
    kw = dict(max_num_batched_tokens=8, page_tokens=4, cpu_threads=1)
    jenga = run_one(tmp_path, "jenga", 1 << 20, w, **kw)
    maxp = run_one(tmp_path, "max-page", 1 << 20, w, **kw)
    assert (jenga.requests, jenga.errors, jenga.images, jenga.encoder_runs) == (2, 0, 2, 2)
    assert maxp.images == 2 and maxp.encoder_runs > 2
    text = table("tiny", 1 << 20, [jenga, maxp, Result("static", 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, "too big")])
    assert "| jenga |" in text and "refused: too big" in text and f"| {maxp.encoder_runs} / 2 |" in text
    json.dumps([jenga.__dict__])
