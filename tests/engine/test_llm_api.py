"""LLM as a vLLM user calls it, on a tiny random-weight llama: a repo id
from a local Hugging Face cache (HF_HOME), token-id prompts without a
tokenizer, chat content parts and templates rendered as transformers
renders them, generation-config defaults, refused quantized checkpoints."""

import json
import shutil

import pytest
from engine_helpers import tiny_checkpoint

from jenga import LLM, SamplingParams

TEMPLATE = ("{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}"
            "<{{ m.role }}>{{ m.content | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}{{ extra | default('') | tojson }}")
KW = dict(device="cpu", cpu_threads=1, block_size=4, kv_cache_memory_bytes=1 << 20)
GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    tiny_checkpoint("llama", path)
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": TEMPLATE}))
    return path


def llm(path, **kw):
    return LLM(str(path), **{**KW, **kw})


def copy_model(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_repo_id_from_the_local_hf_cache(tiny, tmp_path, monkeypatch):
    snap = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "c0ffee"
    copy_model(tiny, snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("c0ffee")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    a = llm("org/tiny").generate([[1, 2, 3]], GREEDY, use_tqdm=False)
    b = llm(tiny).generate([[1, 2, 3]], GREEDY, use_tqdm=False)
    assert a[0].outputs[0].token_ids == b[0].outputs[0].token_ids
    with pytest.raises(ValueError, match="'org/other' is not a folder, and not in the local Hugging Face cache "
                                         ".*huggingface-cli download org/other"):
        llm("org/other")
    with pytest.raises(ValueError, match="placeholder"):
        llm("/path/to/model")


def test_token_ids_without_a_tokenizer(tiny, tmp_path):
    bare = copy_model(tiny, tmp_path / "bare", drop=("tokenizer.json",))
    with pytest.raises(ValueError, match="tokenizer: .* has no tokenizer.json .*skip_tokenizer_init=True"):
        llm(bare)
    model = llm(bare, skip_tokenizer_init=True)
    ref = llm(tiny).generate([[5, 6, 7]], GREEDY, use_tqdm=False)[0].outputs[0]
    out = model.generate([[5, 6, 7]], GREEDY, use_tqdm=False)[0].outputs[0]
    assert out.token_ids == ref.token_ids and out.text == ""
    with pytest.raises(ValueError, match="text needs a tokenizer"):
        model.generate("hello", GREEDY)
    assert llm(bare, tokenizer=str(tiny)).get_tokenizer() is not None     # tokenizer from another folder


def test_quantized_checkpoints_are_refused(tiny, tmp_path):
    q = copy_model(tiny, tmp_path / "q")
    cfg = json.loads((q / "config.json").read_text())
    (q / "config.json").write_text(json.dumps({**cfg, "quantization_config": {"quant_method": "awq"}}))
    with pytest.raises(ValueError, match="quantized weights .*'awq'"):
        llm(q)


def test_chat_parts_and_templates_render_as_transformers(tiny, tmp_path):
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tiny / "tokenizer.json"), bos_token="<s>", eos_token="</s>")
    model = llm(tiny)
    conv = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi ünï"}]
    parts = [conv[0], {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "ünï"}]}]
    out = model.chat(conv, GREEDY, use_tqdm=False, extra={"a": [1, "é"]})[0]
    want = hf.apply_chat_template(conv, chat_template=TEMPLATE, add_generation_prompt=True, tokenize=False,
                                  extra={"a": [1, "é"]})
    assert out.prompt == want
    assert model.chat(parts, GREEDY, use_tqdm=False, extra={"a": [1, "é"]})[0].prompt == want
    other = tmp_path / "t.jinja"
    other.write_text("{{ messages[-1].content }}!")
    assert model.chat(conv, GREEDY, use_tqdm=False, chat_template=str(other))[0].prompt == "Hi ünï!"
    assert model.chat(conv, GREEDY, use_tqdm=False, chat_template="[{{ messages | length }}]")[0].prompt == "[2]"
    with pytest.raises(ValueError, match=r"messages\[1\].content\[0\] must be a text part"):
        model.chat([conv[0], {"role": "user", "content": [{"type": "txt", "text": "x"}]}])
    with pytest.raises(ValueError, match="chat template failed: no tools"):
        model.chat([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="chat_template: no file"):
        model.chat(conv, chat_template="missing.jinja")
    assert not model.engine.has_unfinished_requests()


def test_generation_config_supplies_defaults(tiny, tmp_path, capsys):
    g = copy_model(tiny, tmp_path / "g")
    (g / "generation_config.json").write_text(json.dumps({"temperature": 0.0, "max_new_tokens": 3}))
    model = llm(g)
    assert model.get_default_sampling_params() == SamplingParams(temperature=0.0, max_tokens=3)
    out = model.generate([[1, 2, 3]])[0]              # the progress bar is on by default
    assert len(out.outputs[0].token_ids) <= 3
    assert "Processed prompts (generate)" in capsys.readouterr().err
    assert llm(g, generation_config="vllm").get_default_sampling_params() == SamplingParams()
