"""Workload generators: seeded, with the stated length distributions, and
with shared segments that really share token ids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jenga.memory.spec import LayerSpec, ModelShape
from jenga.sim.runner import sim_token
from jenga.sim.trace import segment_tokens
from jenga.sim.workloads import (arrivals, arxiv_qa, inline_images_for, make_workload, mmlu_pro, mmmu_pro,
                                 multiturn, sharegpt)

ALL = [mmmu_pro, arxiv_qa, mmlu_pro, sharegpt, multiturn]


@pytest.mark.parametrize("gen", ALL)
def test_same_seed_same_requests_other_seed_others(gen):
    a, b, c = gen(12, seed=3, rate=2.0), gen(12, seed=3, rate=2.0), gen(12, seed=4, rate=2.0)
    assert a == b
    assert [r.prompt for r in a] != [r.prompt for r in c]
    assert len(a) == 12 and len({r.req_id for r in a}) == 12
    assert [r.arrival_time for r in a] == sorted(r.arrival_time for r in a)


@pytest.mark.parametrize("gen", ALL)
def test_lengths_do_not_depend_on_the_rate(gen):
    slow, burst = gen(8, seed=1, rate=0.5), gen(8, seed=1)
    assert sorted(r.prompt for r in slow) == sorted(r.prompt for r in burst)
    # all at once (multiturn: sessions at once, later turns think_time apart)
    assert all(r.arrival_time == 0.0 for r in burst if not r.req_id.startswith("chat") or r.req_id.endswith("-t0"))


def test_poisson_arrivals():
    t = arrivals(4000, 5.0, 0)
    gaps = np.diff([0.0] + t)
    assert abs(gaps.mean() - 0.2) < 0.01 and (gaps > 0).all()
    assert arrivals(3, math.inf, 0) == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="rate"):
        arrivals(3, 0.0, 0)


def test_mmmu_pro_one_big_image_and_a_short_question():
    reqs = mmmu_pro(300, seed=0)
    n_img = np.array([r.images[0].num_tokens for r in reqs])
    assert abs(n_img.mean() - 6193) < 30 and 100 < n_img.std() < 200
    assert all(len(r.images) == 1 and r.images[0].position <= 4 for r in reqs)
    assert 38 < np.mean([r.prompt_len for r in reqs]) < 48          # one placeholder per image
    assert len({r.images[0].content_hash for r in reqs}) == 300
    assert all(r.output_len == 200 for r in reqs)


def test_mmmu_pro_inline_images_hold_one_placeholder_per_image_token():
    for r in mmmu_pro(5, seed=0, inline_images=True):
        img = r.images[0]
        assert r.prompt_len > img.num_tokens
        assert r.prompt[img.position:img.end] == segment_tokens(f"image:{img.content_hash}", img.num_tokens)


def test_inline_images_for_models():
    vision = ModelShape("llava", (LayerSpec("full", num_kv_heads=1, head_size=8),
                                  LayerSpec("vision", hidden_size=8)), 100)
    mllama = ModelShape("mllama", (LayerSpec("full", num_kv_heads=1, head_size=8),
                                   LayerSpec("cross", num_kv_heads=1, head_size=8)), 100)
    assert inline_images_for(vision) and not inline_images_for(mllama)


def test_arxiv_documents_are_shared_segments():
    reqs = arxiv_qa(40, seed=2, questions_per_doc=4, max_doc=50000)
    by_doc: dict[str, list] = {}
    for r in reqs:
        by_doc.setdefault(r.segments[0].name, []).append(r)
    assert len(by_doc) == 10 and all(len(v) == 4 for v in by_doc.values())
    for name, rs in by_doc.items():
        n = rs[0].segments[0].length
        assert 1000 <= n <= 50000
        assert all(r.prompt[:n] == rs[0].prompt[:n] for r in rs)           # shared ids
        assert len({r.prompt[n:] for r in rs}) == 4                        # distinct questions
        assert all(15 <= r.prompt_len - n <= 60 and 100 <= r.output_len <= 200 for r in rs)
    docs = list(by_doc.values())
    assert docs[0][0].prompt[:100] != docs[1][0].prompt[:100]
    ordered = arxiv_qa(8, seed=2, questions_per_doc=4, shuffle=False)
    assert [r.segments[0].name for r in ordered] == ["arxiv-2-doc0"] * 4 + ["arxiv-2-doc1"] * 4


def test_arxiv_length_distribution():
    reqs = arxiv_qa(1000, seed=0, questions_per_doc=1, doc_median=2000, doc_sigma=0.5, min_doc=1, max_doc=10**6)
    docs = np.array([r.segments[0].length for r in reqs])
    assert abs(np.median(docs) - 2000) < 100
    assert abs(np.log(docs).std() - 0.5) < 0.04
    clipped = arxiv_qa(50, seed=0, questions_per_doc=1, doc_median=2000, min_doc=1500, max_doc=2500)
    assert {1500, 2500} <= {r.segments[0].length for r in clipped} <= set(range(1500, 2501))


def test_mmlu_pro_shared_prefix_and_lengths():
    reqs = mmlu_pro(100, seed=0, shared_prefix_len=128, num_prefixes=2)
    prefixes = {r.prompt[:128] for r in reqs}
    assert len(prefixes) == 2
    assert all(200 <= r.prompt_len <= 1000 and r.output_len == 20 for r in reqs)
    with pytest.raises(ValueError, match="shared_prefix_len"):
        mmlu_pro(3, shared_prefix_len=300, prompt_len=(200, 400))


def test_sharegpt_lognormal_lengths():
    reqs = sharegpt(3000, seed=0)
    p = np.array([r.prompt_len for r in reqs])
    o = np.array([r.output_len for r in reqs])
    assert abs(np.median(p) - 120) < 10 and abs(np.median(o) - 150) < 10
    assert p.min() >= 4 and p.max() <= 4096 and o.max() <= 2048


def test_multiturn_prompts_replay_history_and_sim_answers():
    reqs = multiturn(6, seed=0, turns=3, system_prompt_len=20, think_time=30.0)
    sessions: dict[str, list] = {}
    for r in reqs:
        sessions.setdefault(r.req_id.rsplit("-t", 1)[0], []).append(r)
    assert sorted(len(v) for v in sessions.values()) == [3, 3]
    for turns in sessions.values():
        turns.sort(key=lambda r: r.req_id)
        for prev, cur in zip(turns, turns[1:]):
            answer = tuple(sim_token(prev.req_id, p) for p in range(prev.prompt_len, prev.prompt_len + prev.output_len))
            assert cur.prompt[:prev.prompt_len + prev.output_len] == prev.prompt + answer
            assert cur.arrival_time - prev.arrival_time == pytest.approx(30.0)
    assert len({r.prompt[:20] for r in reqs}) == 1


def test_make_workload_by_name():
    assert make_workload("mmlu-pro", 3, seed=1) == mmlu_pro(3, seed=1)
    with pytest.raises(ValueError, match="unknown workload 'nope'.*sharegpt"):
        make_workload("nope", 3)
    with pytest.raises(ValueError, match="num_requests"):
        sharegpt(0)


def test_arxiv_packed_articles_fill_documents_up_to_max_doc():
    reqs = arxiv_qa(400, seed=0, questions_per_doc=4, article_median=1000, doc_sigma=0.5, max_doc=8000)
    docs = np.array(sorted({(r.segments[0].name, r.segments[0].length) for r in reqs}))[:, 1].astype(int)
    assert len(docs) == 100 and docs.max() <= 8000
    # the next article did not fit: the gap to max_doc is about one article
    assert 6500 < docs.mean() < 7800 and np.median(docs) > 7000 and docs.min() > 2000
    one = arxiv_qa(4, seed=0, article_median=50000, max_doc=8000)
    assert one[0].segments[0].length == 8000          # a lone article longer than max_doc is cut
    with pytest.raises(ValueError, match="article_median"):
        arxiv_qa(4, article_median=0)


def test_arxiv_article_groups_make_documents_of_exact_article_counts():
    groups = (3, 1, 12)
    reqs = arxiv_qa(12, seed=0, questions_per_doc=4, article_median=1000, doc_sigma=0.5, articles_per_doc=groups,
                    max_doc=10**6, shuffle=False)
    docs = [reqs[4 * d].segments[0].length for d in range(3)]
    # a document of k lognormal articles (median 1000) is about k thousand tokens
    assert 1500 < docs[0] < 6000 and 200 < docs[1] < 4000 and 7000 < docs[2] < 20000
    assert all(r.segments[0].length == docs[i // 4] for i, r in enumerate(reqs))
    capped = arxiv_qa(4, seed=0, article_median=1000, articles_per_doc=(12,), max_doc=5000)
    assert capped[0].segments[0].length == 5000
    with pytest.raises(ValueError, match="articles_per_doc"):
        arxiv_qa(4, articles_per_doc=(2,))
    with pytest.raises(ValueError, match="articles_per_doc"):
        arxiv_qa(4, article_median=1000, articles_per_doc=(0,))
