"""mllama through the real engine (jenga.engine.llm.LLM) against transformers:
logits to 1e-4, greedy tokens one for one, with chunked prefill, prefix
caching (cross pages reused by image hash: no encoder rerun), preemption,
Jenga's plan (a `cross` group) and max-page's (one merged group that stores
text and encoder tokens in every layer)."""

import pytest
import torch
from vlm_helpers import (vlm_llm, BOS, IMAGE, engine_logits, hf_greedy, hf_mllama_inputs, random_image, tiny_mllama,
                         to_pil)

from jenga.sched.params import SamplingParams

N = 10
GREEDY = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
IMAGES = [random_image(0, 20, 37), random_image(1, 16, 16), random_image(2, 40, 12)]   # 2, 1, 2 tiles
MULTI = [BOS, 65, IMAGE, 66, 67, IMAGE, IMAGE, 70, 71, 72, 73]     # text before, between and after images
SINGLE = [BOS, 80, 81, IMAGE, 90, 91, 92]
TEXT = [BOS, 80, 81, 90, 91]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("mllama")
    return path, tiny_mllama(path)




def _ref(hf, prompt, images):
    return hf_greedy(hf, prompt, N, **hf_mllama_inputs(prompt, images)) if images else hf_greedy(hf, prompt, N)


def _req(prompt, images):
    return {"prompt_token_ids": prompt, "multi_modal_data": {"image": images}}


@pytest.mark.parametrize("allocator", ["jenga", "max-page"])
def test_logits_match_transformers(ckpt, allocator):
    path, hf = ckpt
    logits, ids = engine_logits(vlm_llm(path, allocator=allocator), MULTI, IMAGES)
    assert ids == MULTI
    with torch.no_grad():
        ref = hf(torch.tensor([MULTI]), position_ids=torch.arange(len(MULTI))[None],
                 **hf_mllama_inputs(MULTI, IMAGES)).logits[0]
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("allocator", ["jenga", "max-page", "static", "uniform"])
def test_greedy_matches_transformers_with_chunked_prefill(ckpt, allocator):
    path, hf = ckpt
    llm = vlm_llm(path, allocator=allocator, max_num_batched_tokens=5)   # chunks of at most 5 tokens, mixed steps
    cases = [(MULTI, IMAGES), (SINGLE, IMAGES[:1]), (TEXT, [])]
    outs = llm.generate([_req(p, i) for p, i in cases], GREEDY)
    for (prompt, images), out in zip(cases, outs):
        assert list(out.outputs[0].token_ids) == _ref(hf, prompt, images)
    # SINGLE's image equals MULTI's first: a cross group finds its pages by content hash; max-page keeps
    # encoder tokens with the text, uncached, so every request runs its images once
    assert llm.engine.stats().encoder_runs == (4 if allocator == "max-page" else 3)
    llm.engine.manager.check_invariants()


def test_prefix_cache_reuses_cross_pages(ckpt):
    path, hf = ckpt
    llm = vlm_llm(path)
    first = llm.generate(_req(SINGLE, IMAGES[1:2]), GREEDY)[0]
    assert (llm.engine.stats().encoder_runs, first.num_cached_tokens) == (1, 0)
    again = llm.generate(_req(SINGLE, [to_pil(IMAGES[1])]), GREEDY)[0]    # same pixels, another form
    assert llm.engine.stats().encoder_runs == 1                          # no encoder rerun
    assert again.num_cached_tokens == 4                                  # one full page of the 7-token prompt
    assert again.outputs[0].token_ids == first.outputs[0].token_ids == tuple(_ref(hf, SINGLE, IMAGES[1:2]))
    # a different image: the text before it is not shared either, since it attends to the image
    other = llm.generate(_req(SINGLE, IMAGES[2:3]), GREEDY)[0]
    assert (llm.engine.stats().encoder_runs, other.num_cached_tokens) == (2, 0)
    assert list(other.outputs[0].token_ids) == _ref(hf, SINGLE, IMAGES[2:3])


def test_preemption_under_a_small_kv_budget(ckpt):
    path, hf = ckpt
    # 28 large pages of 2 KiB: a request needs ~17 alone (8 for 31 text tokens, 9 for 34 encoder tokens);
    # five admitted together outgrow the pool while they decode
    llm = vlm_llm(path, kv_cache_memory=28 * 2048, max_num_batched_tokens=8)
    cases = [(SINGLE, IMAGES[:1]), (SINGLE[:5] + [93, 94], IMAGES[2:3]), (MULTI[:3] + [75, 76], IMAGES[1:2]),
             (SINGLE, IMAGES[1:2]), (MULTI[:3] + [75, 76], IMAGES[:1])]
    outs = llm.generate([_req(p, i) for p, i in cases], SamplingParams(max_tokens=24, temperature=0.0,
                                                                      ignore_eos=True))
    assert llm.engine.stats().num_preemptions > 0
    for (prompt, images), out in zip(cases, outs):
        ref = hf_greedy(hf, prompt, 24, **hf_mllama_inputs(prompt, images))
        assert list(out.outputs[0].token_ids) == ref
    llm.engine.manager.check_invariants()


def test_chat_places_images_like_generate(ckpt):
    path, _ = ckpt
    llm = vlm_llm(path)
    conv = [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "image", "image": IMAGES[0]},
                                         {"type": "text", "text": " what?"}]}]
    out = llm.chat(conv, GREEDY)[0]
    assert out.prompt_token_ids.count(IMAGE) == 1
    again = llm.generate(_req(list(out.prompt_token_ids), IMAGES[:1]), GREEDY)[0]
    assert again.outputs[0].token_ids == out.outputs[0].token_ids


def test_bad_images_raise_value_errors(ckpt, tmp_path):
    path, _ = ckpt
    llm = vlm_llm(path)
    with pytest.raises(ValueError, match=r"images\[0\]: no such image file"):
        llm.generate(_req(SINGLE, [str(tmp_path / "missing.png")]), GREEDY)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"images\[0\]: cannot read"):
        llm.generate(_req(SINGLE, [tmp_path / "bad.png"]), GREEDY)
    with pytest.raises(ValueError, match=r"images\[0\]: an image array must be"):
        llm.generate(_req(SINGLE, [torch.zeros(16, 16, dtype=torch.uint8)[None, None]]), GREEDY)
    with pytest.raises(ValueError, match="prompt has 1 image tokens .* but 2 images"):
        llm.generate(_req(SINGLE, IMAGES[:2]), GREEDY)
    with pytest.raises(ValueError, match="prompt has 1 image tokens .* but 0 images"):
        llm.generate(SINGLE, GREEDY)
    assert not llm.engine.has_unfinished_requests()
    assert len(llm.engine.runner.images) == 0


def test_parallel_sampling_shares_cross_pages(ckpt):
    """n=3 on a prompt past the shared-prefill wait (32 tokens): the image
    is encoded once and its cross pages are shared; every child gives
    transformers' greedy tokens."""
    path, hf = ckpt
    llm = vlm_llm(path)
    prompt = [BOS] + [60 + i % 30 for i in range(40)] + [IMAGE, 90, 91, 92]
    params = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True, n=3)
    [out] = llm.generate(_req(prompt, IMAGES[:1]), params)
    want = tuple(_ref(hf, prompt, IMAGES[:1]))
    assert [c.token_ids for c in out.outputs] == [want] * 3
    assert llm.engine.stats().encoder_runs == 1
    assert llm.engine.stats().hit_tokens == 2 * 44      # the siblings hit the 45-token prompt's full pages
    llm.engine.manager.check_invariants()
