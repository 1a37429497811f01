"""Request parsing without a server: field names in errors, SamplingParams
built from a request, and pydantic locations turned into params."""

from __future__ import annotations

import pytest

from jenga.sched.params import SamplingParams
from jenga.server.errors import APIError, from_value_error, pydantic_param
from jenga.server.protocol import ChatCompletionRequest, CompletionRequest, parse


def _err(model, raw: str) -> APIError:
    with pytest.raises(APIError) as e:
        req = parse(model, raw.encode())
        req.check(256)
        if isinstance(req, CompletionRequest):
            req.single_prompt()
    return e.value


def test_sampling_params_carry_every_field():
    req = parse(CompletionRequest, b'{"model": "m", "prompt": "x", "temperature": 0.5, "top_p": 0.9, "top_k": 4,'
                                   b' "seed": 3, "stop": "END", "stop_token_ids": [7], "min_tokens": 2,'
                                   b' "ignore_eos": true}')
    req.check(256)
    assert req.sampling_params(10) == SamplingParams(max_tokens=10, temperature=0.5, top_p=0.9, top_k=4, seed=3,
                                                     stop=("END",), stop_token_ids=(7,), min_tokens=2,
                                                     ignore_eos=True)


def test_nulls_mean_defaults_and_neutral_unsupported_fields_pass():
    req = parse(CompletionRequest, b'{"model": "m", "prompt": "x", "temperature": null, "max_tokens": null,'
                                   b' "logprobs": null, "echo": false, "presence_penalty": 0, "best_of": 1}')
    req.check(256)
    assert (req.temperature, req.max_tokens) == (1.0, 16)


def test_max_completion_tokens_is_an_alias():
    req = parse(ChatCompletionRequest, b'{"model": "m", "messages": [{"role": "user", "content": "x"}],'
                                       b' "max_completion_tokens": 9}')
    req.check(256)
    assert req.max_tokens == 9
    err = _err(ChatCompletionRequest, '{"model": "m", "messages": [{"role": "user", "content": "x"}],'
                                      ' "max_completion_tokens": 9, "max_tokens": 3}')
    assert err.param == "max_completion_tokens"


@pytest.mark.parametrize("raw,param", [
    ('{"model": "m", "prompt": "x", "suffix": "tail"}', "suffix"),
    ('{"model": "m", "prompt": "x", "echo": true}', "echo"),
    ('{"model": "m", "prompt": "x", "stop": ["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}',
     "stop"),
    ('{"model": "m", "prompt": [[1, 2], [3]]}', "prompt"),
    ('{"model": "m", "prompt": [[]]}', "prompt"),
    ('{"model": "m", "messages": [{"role": "assistant", "content": [{"type": "image_url",'
     ' "image_url": {"url": "data:x"}}]}]}', "messages[0].content"),
    ('{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}', "messages[0].content[0].text"),
])
def test_errors_name_the_field(raw, param):
    model = ChatCompletionRequest if "messages" in raw else CompletionRequest
    assert _err(model, raw).param == param


def test_pydantic_locations_become_openai_params():
    assert pydantic_param(("body", "messages", 2, "role")) == "messages[2].role"
    assert pydantic_param(("prompt", "list[int]", 3)) == "prompt[3]"
    assert pydantic_param(("messages", 0, "content", "list[tagged-union[A,B]]", 1, "image_url", "image_url",
                           "url")) == "messages[0].content[1].image_url.url"
    assert pydantic_param(()) is None


def test_value_errors_keep_their_leading_field():
    assert from_value_error(ValueError("top_k must be -1"), "prompt").param == "top_k"
    assert from_value_error(ValueError("prompt has 300 tokens"), "messages").param == "messages"
