"""LLaVA through the real engine (jenga.engine.llm.LLM) against transformers:
logits to 1e-4 (CLIP and SigLIP towers), greedy tokens one for one, with
chunked prefill cutting through an image (Jenga: the encoder runs once per
image, its embeddings read from the vision pages chunk by chunk; max-page:
once per chunk, as vLLM v0), prefix caching (no encoder rerun), and
preemption."""

import json

import pytest
import torch
from vlm_helpers import (vlm_llm, BOS, IMAGE, engine_logits, hf_greedy, hf_llava_inputs, random_image, save_tokenizer,
                         tiny_llava)

from jenga.sched.params import SamplingParams

N = 10
GREEDY = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
IMAGES = [random_image(0, 20, 37), random_image(1, 16, 16), random_image(2, 40, 12)]
TOKENS = 16                                  # per image: (16 px / 4 px)^2 patches, CLS dropped
P1 = [BOS, 65, 66, IMAGE, 67, 68]            # expanded: image at [3, 19), 21 tokens
P2 = [BOS, 65, 66, IMAGE, 99, 98]            # same start, differs right after the image
TWO = [BOS, IMAGE, 70, 71, IMAGE, 72]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava")
    return path, tiny_llava(path)




def _expand(prompt):
    return [t for x in prompt for t in ([IMAGE] * TOKENS if x == IMAGE else [x])]


def _ref(hf, prompt, images, n=N):
    return hf_greedy(hf, _expand(prompt), n, **(hf_llava_inputs(images) if images else {}))


def _req(prompt, images):
    return {"prompt_token_ids": prompt, "multi_modal_data": {"image": images}}


@pytest.mark.parametrize("tower,allocator", [("clip", "jenga"), ("clip", "max-page"), ("siglip", "jenga")])
def test_logits_match_transformers(tmp_path, tower, allocator):
    hf = tiny_llava(tmp_path, seed=1, tower=tower)
    logits, ids = engine_logits(vlm_llm(tmp_path, allocator=allocator), TWO, IMAGES[:2])
    assert ids == _expand(TWO)
    if tower == "siglip":   # LLaVA's processor (CLIP-style resize and crop) feeds whatever tower it has
        inputs = dict(pixel_values=torch.stack([x.pixel_values for x in _inputs_for(tmp_path, IMAGES[:2])]))
    else:
        inputs = hf_llava_inputs(IMAGES[:2])
    with torch.no_grad():
        ref = hf(torch.tensor([ids]), position_ids=torch.arange(len(ids))[None], **inputs).logits[0]
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-4)


def _inputs_for(path, images):
    from jenga.engine.vision_inputs import VisionPrompts
    from jenga.model.loader import load_model
    vp = VisionPrompts(load_model(path), path)
    return vp.prepare([IMAGE] * len(images), images).inputs


@pytest.mark.parametrize("allocator", ["jenga", "max-page", "static", "uniform"])
def test_greedy_matches_transformers_with_chunks_through_images(ckpt, allocator):
    path, hf = ckpt
    llm = vlm_llm(path, allocator=allocator, max_num_batched_tokens=7)
    cases = [(P1, IMAGES[:1]), (TWO, IMAGES[1:3]), ([BOS, 80, 81, 82], [])]
    outs = llm.generate([_req(p, i) for p, i in cases], GREEDY)
    for (prompt, images), out in zip(cases, outs):
        assert list(out.outputs[0].token_ids) == _ref(hf, prompt, images)
    llm.engine.manager.check_invariants()


@pytest.mark.parametrize("allocator,runs", [("jenga", 1), ("max-page", 3)])
def test_encoder_runs_once_per_image_not_per_chunk(ckpt, allocator, runs):
    path, hf = ckpt
    # chunks of 8: [0, 8), [8, 16), [16, 21) all reach the image at [3, 19)
    llm = vlm_llm(path, allocator=allocator, max_num_batched_tokens=8)
    out = llm.generate(_req(P1, IMAGES[:1]), GREEDY)[0]
    assert llm.engine.stats().encoder_runs == runs
    assert list(out.outputs[0].token_ids) == _ref(hf, P1, IMAGES[:1])


def test_prefix_hit_inside_an_image_reuses_its_embedding_pages(ckpt):
    path, hf = ckpt
    llm = vlm_llm(path, max_num_batched_tokens=8)
    first = llm.generate(_req(P1, IMAGES[:1]), GREEDY)[0]
    assert llm.engine.stats().encoder_runs == 1
    again = llm.generate(_req(P1, IMAGES[:1]), GREEDY)[0]
    assert (again.num_cached_tokens, llm.engine.stats().encoder_runs) == (20, 1)
    assert again.outputs[0].token_ids == first.outputs[0].token_ids
    # P2 shares 16 tokens, cutting the image at 16: the image's last 3 embedding pages come from the cache
    cut = llm.generate(_req(P2, IMAGES[:1]), GREEDY)[0]
    assert (cut.num_cached_tokens, llm.engine.stats().encoder_runs) == (16, 1)
    assert list(cut.outputs[0].token_ids) == _ref(hf, P2, IMAGES[:1])
    # another image behind the same placeholders: only the text before it hits
    other = llm.generate(_req(P1, IMAGES[2:3]), GREEDY)[0]
    assert (other.num_cached_tokens, llm.engine.stats().encoder_runs) == (0, 2)
    assert list(other.outputs[0].token_ids) == _ref(hf, P1, IMAGES[2:3])


def test_preemption_under_a_small_kv_budget(ckpt):
    path, hf = ckpt
    # 28 large pages of 2 KiB: a request fits alone (TWO: 68 tokens -> 18 pages, 32 embeddings -> 4), five
    # admitted together outgrow the pool while they decode
    llm = vlm_llm(path, kv_cache_memory=28 * 2048, max_num_batched_tokens=8)
    cases = [(P1, IMAGES[:1]), (P2, IMAGES[1:2]), (TWO, IMAGES[1:3]), (P2, IMAGES[2:3]), (P1, IMAGES[1:2])]
    outs = llm.generate([_req(p, i) for p, i in cases], SamplingParams(max_tokens=32, temperature=0.0,
                                                                      ignore_eos=True))
    assert llm.engine.stats().num_preemptions > 0
    for (prompt, images), out in zip(cases, outs):
        assert list(out.outputs[0].token_ids) == _ref(hf, prompt, images, 32)
    llm.engine.manager.check_invariants()


def test_prompts_already_expanded_and_chat(ckpt):
    path, hf = ckpt
    llm = vlm_llm(path)
    out = llm.generate(_req(_expand(P1), IMAGES[:1]), GREEDY)[0]     # as transformers' processor writes it
    assert list(out.outputs[0].token_ids) == _ref(hf, P1, IMAGES[:1])
    conv = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _png(path, IMAGES[0])}},
                                         {"type": "text", "text": "what?"}]}]
    chat = llm.chat(conv, GREEDY)[0]
    assert chat.prompt_token_ids.count(IMAGE) == TOKENS
    with pytest.raises(ValueError, match="prompt has 2 image tokens .* but 1 images"):
        llm.generate(_req(TWO, IMAGES[:1]), GREEDY)


def _png(folder, image):
    from vlm_helpers import to_pil
    path = folder / "image.png"
    to_pil(image).save(path)
    return str(path)


def test_text_model_refuses_images(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    save_tokenizer(tmp_path, "<image>")
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    llm = vlm_llm(tmp_path)
    with pytest.raises(ValueError, match="images: model .* does not accept images"):
        llm.generate(_req([BOS, IMAGE, 5], IMAGES[:1]), GREEDY)
    assert not llm.engine.has_unfinished_requests()


def test_server_chat_with_a_data_url_image(ckpt):
    import base64
    import io

    from fastapi.testclient import TestClient
    from vlm_helpers import to_pil

    from jenga.server.app import ServerConfig, build_app
    path, _ = ckpt
    llm = vlm_llm(path)
    buf = io.BytesIO()
    to_pil(IMAGES[0]).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what?"}]
    expected = llm.chat([{"role": "user", "content": content}], GREEDY)[0].outputs[0].text
    runs = llm.engine.stats().encoder_runs
    with TestClient(build_app(llm.engine, ServerConfig(served_model_name="tiny"))) as client:
        r = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": N, "temperature": 0,
                                                      "ignore_eos": True,
                                                      "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected
    assert llm.engine.stats().encoder_runs == runs     # the same pixels: its prompt hit the prefix cache
