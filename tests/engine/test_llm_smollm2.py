"""The real SmolLM2-135M-Instruct through the whole engine (CPU, fp32).

One LLM serves the module.  Its tests run with one torch thread (as fast
for these small batches, and far faster on a busy machine); conftest puts
torch's setting back after each test.
"""

import pytest
import torch

from jenga.engine.llm import LLM
from jenga.sched.params import SamplingParams

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
COLORS = [{"role": "user", "content": "List three colors."}]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def llm(smollm2_dir):
    return LLM(str(smollm2_dir), kv_cache_memory=32 << 20, cpu_threads=1, device="cpu")


def test_engine_reads_model_metadata(llm, smollm2_dir):
    assert llm.engine.model_path == smollm2_dir
    assert llm.engine.shape.max_context == 8192 and llm.get_tokenizer().eos_token_ids == (2,)
    assert llm.engine.max_model_len == 704   # lowered: the longest request a 32 MiB pool holds


def test_chat_answers_in_english(llm):
    out = llm.chat(FRANCE, SamplingParams(max_tokens=24, temperature=0.0))[0]
    assert out.outputs[0].text == "The capital of France is Paris."
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].token_ids[-1] == 2
    assert out.prompt.endswith("<|im_start|>assistant\n")


def test_greedy_tokens_match_transformers(llm, smollm2_dir):
    from transformers import AutoModelForCausalLM
    prompt = "The three primary colors are"
    ids = llm.get_tokenizer().encode(prompt)
    ours = llm.generate(prompt, SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
    ref_model = AutoModelForCausalLM.from_pretrained(smollm2_dir, local_files_only=True,
                                                     attn_implementation="eager")
    t = torch.tensor([ids])
    ref = ref_model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=12, do_sample=False,
                             eos_token_id=None, pad_token_id=2)
    assert list(ours.outputs[0].token_ids) == ref[0, len(ids):].tolist()
    assert list(ours.prompt_token_ids) == ids


def test_stop_string_and_streaming(llm):
    eng = llm.engine
    params = SamplingParams(max_tokens=40, temperature=0.0, stop=("\n2.",))
    ids = llm.get_tokenizer().apply_chat_template(COLORS, tokenize=True)
    eng.add_request("colors", ids, params)
    streamed, final = "", None
    while final is None:
        for out in eng.step():
            streamed += out.delta.text
            final = out if out.finished else None
    c = final.outputs[0]
    assert c.text.startswith("1. Red") and "\n" not in c.text
    assert (c.finish_reason, c.stop_reason) == ("stop", "\n2.")
    assert streamed == c.text
    assert not eng.has_unfinished_requests()
    eng.manager.check_invariants()


def test_shared_system_prompt_hits_the_prefix_cache(llm):
    first = llm.chat(FRANCE, SamplingParams(max_tokens=2, temperature=0.0))[0].prompt_token_ids
    fresh = [{"role": "user", "content": "Name one fruit."}]   # asked nowhere else
    out = llm.chat(fresh, SamplingParams(max_tokens=2, temperature=0.0))[0]
    common = next(i for i, (a, b) in enumerate(zip(first, out.prompt_token_ids)) if a != b)
    assert common == 24    # the default system prompt + "<|im_start|>user\n"
    assert out.num_cached_tokens == 16    # whole 16-token pages only
