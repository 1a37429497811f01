"""Tokenizer, chat templates, the incremental detokenizer and stop strings."""

import json

import pytest
from engine_helpers import build_byte_tokenizer

from jenga.engine.tokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer, StopHit, StopStrings, Tokenizer

TEXT = "Hi 😀 中文 ok ñ!"


# ---------------------------------------------------------------- SmolLM2
def test_smollm2_encode_decode_and_eos(smol_tokenizer):
    tok = smol_tokenizer
    assert tok.encode("hello 12345 world") == [28120, 216, 33, 34, 35, 36, 37, 905]
    assert tok.encode("<|im_start|>user\nhi<|im_end|>\n") == [1, 4093, 198, 6004, 2, 198]
    assert tok.eos_token_ids == (2,)
    assert tok.vocab_size == 49152
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.decode([1, *ids, 2]) == TEXT                 # special tokens skipped
    assert tok.decode([1, *ids], skip_special_tokens=False) == "<|im_start|>" + TEXT


def test_smollm2_chat_template(smol_tokenizer):
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    text = smol_tokenizer.apply_chat_template(msgs)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    no_gen = smol_tokenizer.apply_chat_template(msgs, add_generation_prompt=False)
    assert no_gen == text[:-len("<|im_start|>assistant\n")]
    ids = smol_tokenizer.apply_chat_template(msgs, tokenize=True)
    assert ids == smol_tokenizer.encode(text, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(2) == 2


def test_smollm2_streaming_matches_decode(smol_tokenizer):
    ids = smol_tokenizer.encode("Emoji 🧑‍🚀 and 汉字 and é — " * 3)
    detok = IncrementalDetokenizer(smol_tokenizer)
    pieces = [detok.add([t]) for t in ids]
    assert all(REPLACEMENT_CHAR not in p for p in pieces)
    assert "".join(pieces) + detok.finish() == smol_tokenizer.decode(ids)


# ------------------------------------------------------- byte-level, 1 token/byte
def test_multibyte_characters_stream_whole(byte_tokenizer):
    ids = byte_tokenizer.encode("a😀中")
    assert len(ids) == 1 + 4 + 3                            # one token per byte
    detok = IncrementalDetokenizer(byte_tokenizer)
    pieces = [detok.add([t]) for t in ids]
    assert pieces == ["a", "", "", "", "😀", "", "", "中"]
    assert detok.finish() == ""
    assert detok.text == "a😀中"


def test_incomplete_tail_is_released_at_finish(byte_tokenizer):
    ids = byte_tokenizer.encode("x中")[:-1]                 # cut inside the character
    detok = IncrementalDetokenizer(byte_tokenizer)
    assert [detok.add([t]) for t in ids] == ["x", "", ""]
    tail = detok.finish()
    assert tail != "" and REPLACEMENT_CHAR in tail
    assert detok.text == byte_tokenizer.decode(ids)


def test_special_tokens_are_skipped_while_streaming(byte_tokenizer):
    eos = byte_tokenizer.backend.token_to_id("</s>")
    detok = IncrementalDetokenizer(byte_tokenizer)
    assert detok.add(byte_tokenizer.encode("ab")) == "ab"
    assert detok.add([eos]) == ""
    assert detok.add(byte_tokenizer.encode("c")) == "c"
    assert detok.text == "abc"


# --------------------------------------------------------------- templates
def test_template_errors_are_value_errors():
    tmpl = "{% for m in messages %}{% if m['role'] == 'bad' %}{{ raise_exception('no bad roles') }}" \
           "{% endif %}{{ m['role'] }}:{{ m['content'] }}|{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    tok = build_byte_tokenizer(template=tmpl)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "user:hi|>"
    with pytest.raises(ValueError, match="no bad roles"):
        tok.apply_chat_template([{"role": "bad", "content": "x"}])
    with pytest.raises(ValueError, match="role"):
        tok.apply_chat_template([{"content": "x"}])
    with pytest.raises(ValueError, match="chat_template"):
        build_byte_tokenizer().apply_chat_template([{"role": "user", "content": "x"}])


def test_from_pretrained_reads_folder_metadata(tmp_path, byte_tokenizer):
    byte_tokenizer.backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "chat_template.jinja").write_text("{{ bos_token }}{{ messages[0]['content'] }}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": {"content": "<s>"}, "eos_token": "</s>"}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7]}))
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 7}))
    tok = Tokenizer.from_pretrained(tmp_path)
    eos = tok.backend.token_to_id("</s>")
    assert tok.eos_token_ids == (5, 7, eos)
    assert tok.apply_chat_template([{"role": "user", "content": "q"}]) == "<s>q"
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_pretrained(tmp_path / "nowhere")


# ------------------------------------------------------------- stop strings
def test_stop_string_found_across_pieces():
    stops = StopStrings(["STOP", "END"], include_in_output=False)
    text = "abc ST"
    assert stops.find(text, len(text)) is None
    text += "OP and END"
    assert stops.find(text, len("OP and END")) == StopHit("STOP", 4)     # earliest wins
    inc = StopStrings(["STOP"], include_in_output=True)
    assert inc.find(text, len("OP and END")) == StopHit("STOP", 8)


def test_stop_search_only_looks_at_new_text():
    stops = StopStrings(["ab"])
    assert stops.find("ab" + "x" * 10, 1) is None          # an old match is not re-reported
    assert stops.find("xxab", 1) == StopHit("ab", 2)


def test_stable_len_holds_back_possible_stop_prefix():
    assert StopStrings(["STOP"]).stable_len("hello ST") == 5
    assert StopStrings(["STOP"], include_in_output=True).stable_len("hello ST") == 8
    assert StopStrings([]).stable_len("hello") == 5
    with pytest.raises(ValueError, match="stop"):
        StopStrings(["ok", ""])
