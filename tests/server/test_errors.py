"""Bad input gets a 400 naming the field (never a 500, never a traceback);
a full queue gets a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading

import httpx
import openai
import pytest

GOOD_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
GOOD_COMPLETION = {"model": "tiny", "prompt": "hello", "max_tokens": 2}


def post(live, path: str, body) -> httpx.Response:
    kw = {"content": body} if isinstance(body, (str, bytes)) else {"json": body}
    return httpx.post(live.base_url + path, headers={"content-type": "application/json"}, timeout=30, **kw)


def assert_400(resp: httpx.Response, param: str | None, words: str) -> None:
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] is None
    assert err["param"] == param
    assert words in err["message"], err["message"]
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("body,param,words", [
    ("{not json", None, "not valid JSON"),
    ("", None, "empty"),
    ("[1, 2]", None, "JSON object"),
    ({**GOOD_COMPLETION, "model": "gpt-4"}, "model", "does not exist"),
    ({"prompt": "hi"}, "model", "Field required"),
    ({**GOOD_COMPLETION, "max_tokens": -1}, "max_tokens", "max_tokens must be in [1, 256]"),
    ({**GOOD_COMPLETION, "max_tokens": 10**9}, "max_tokens", "max_tokens must be in [1, 256]"),
    ({**GOOD_COMPLETION, "prompt": "word " * 60, "max_tokens": 250}, "max_tokens", "maximum context length is 256"),
    ({**GOOD_COMPLETION, "prompt": 5}, "prompt", "expected one of str, list[int], list[str], list[list[int]]"),
    ({**GOOD_COMPLETION, "max_tokens": "many"}, "max_tokens", "valid integer"),
    ({**GOOD_COMPLETION, "temperature": 2.5}, "temperature", "temperature must be in [0, 2]"),
    ({**GOOD_COMPLETION, "temperature": -0.1}, "temperature", "temperature must be in [0, 2]"),
    ({**GOOD_COMPLETION, "top_p": 0}, "top_p", "top_p must be in (0, 1]"),
    ({**GOOD_COMPLETION, "top_p": 1.5}, "top_p", "top_p must be in (0, 1]"),
    ({**GOOD_COMPLETION, "top_k": -3}, "top_k", "top_k must be"),
    ({**GOOD_COMPLETION, "n": 129}, "n", "n must be in [1, 128]"),
    ({**GOOD_COMPLETION, "logprobs": 2}, "logprobs", "not supported"),
    ({**GOOD_COMPLETION, "prompt": ""}, "prompt", "must not be empty"),
    ({**GOOD_COMPLETION, "prompt": ["a", "b"]}, "prompt", "one prompt"),
    ({**GOOD_COMPLETION, "prompt": [5, 100000]}, "prompt", "token ids must"),
    ({**GOOD_COMPLETION, "prompt": list(range(3, 259))}, "prompt", "maximum context length is 256"),
    ({**GOOD_COMPLETION, "stop": [""]}, "stop", "non-empty"),
    ({**GOOD_COMPLETION, "seed": 2**70}, "seed", "64-bit"),
    ({**GOOD_COMPLETION, "seed": True}, "seed", "valid integer"),
    ({**GOOD_COMPLETION, "max_tokens": 2.5}, "max_tokens", "valid integer"),
    ({**GOOD_COMPLETION, "top_k": 2**70}, "top_k", "top_k must be"),
    ({**GOOD_COMPLETION, "stop_token_ids": [-1]}, "stop_token_ids", "non-negative"),
    ({**GOOD_COMPLETION, "min_tokens": -1}, "min_tokens", "min_tokens must be"),
    ({**GOOD_COMPLETION, "stream_options": {"include_usage": True}}, "stream_options", "only allowed"),
    ({**GOOD_COMPLETION, "max_token": 5}, "max_token", "unknown field"),
    ({**GOOD_COMPLETION, "functions": [{"name": "f"}]}, "functions", "not supported"),
    ({**GOOD_COMPLETION, "tool_choice": "auto"}, "tool_choice", "not supported"),
    ({**GOOD_COMPLETION, "response_format": {"type": "json_object"}}, "response_format", "not supported"),
    ({**GOOD_COMPLETION, "logprobs": True}, "logprobs", "not supported"),
    ({**GOOD_COMPLETION, "temperature": True}, "temperature", "valid number"),
    ({**GOOD_COMPLETION, "top_p": "0.5"}, "top_p", "valid number"),
    ({**GOOD_COMPLETION, "stream": "yes"}, "stream", "valid boolean"),
    ({**GOOD_COMPLETION, "ignore_eos": 1}, "ignore_eos", "valid boolean"),
    ({**GOOD_COMPLETION, "min_tokens": 5, "max_tokens": 2}, "min_tokens", "must not exceed max_tokens"),
    ({**GOOD_COMPLETION, "stream": True, "stream_options": {"include_usage": True, "x": 1}},
     "stream_options.x", "Extra inputs"),
])
def test_bad_completion_requests(live, body, param, words):
    assert_400(post(live, "/completions", body), param, words)


@pytest.mark.parametrize("messages,param,words", [
    ([], "messages", "at least one"),
    ([{"role": "robot", "content": "hi"}], "messages[0].role", "Input should be"),
    ([{"role": "user", "content": "hi"}, {"content": "x"}], "messages[1].role", "Field required"),
    ([{"role": "user", "content": [{"type": "audio", "data": "x"}]}], "messages[0].content[0]", "does not match"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0].image_url.url",
     "Field required"),
    ([{"role": "user", "content": "word " * 300}], "messages", "maximum context length is 256"),
    (["Hi"], "messages[0]", "Input should be an object"),
    ([{"role": "user", "content": "x" * 100_000}], "messages", "characters cannot fit"),
])
def test_bad_chat_messages(live, messages, param, words):
    assert_400(post(live, "/chat/completions", {**GOOD_CHAT, "messages": messages}), param, words)


def _png(size=(4, 4)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def _image_chat(url: str) -> dict:
    content = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": url}}]
    return {**GOOD_CHAT, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("extra", [{"tool_choice": "none"}, {"response_format": {"type": "text"}},
                                   {"tools": []}, {"logprobs": False}, {"parallel_tool_calls": True},
                                   {"presence_penalty": 0}, {"echo": False}, {"best_of": 1}])
def test_neutral_values_of_unimplemented_fields_are_accepted(live, extra):
    assert post(live, "/chat/completions", {**GOOD_CHAT, **extra}).status_code == 200


@pytest.mark.parametrize("field,value", [("min_p", 0.5), ("presence_penalty", 0.5), ("frequency_penalty", 0.5),
                                         ("repetition_penalty", 1.2), ("logit_bias", {"5": 1.0}),
                                         ("include_stop_str_in_output", True), ("skip_special_tokens", False)])
def test_sampling_fields_are_passed_through_or_refused(live, field, value):
    """Honoured when SamplingParams has the field, a 400 naming it when not."""
    from jenga.sched.params import SamplingParams
    from jenga.server.protocol import CompletionRequest, parse

    r = post(live, "/completions", {**GOOD_COMPLETION, field: value})
    if field in SamplingParams.__dataclass_fields__:
        assert r.status_code == 200, r.text
        req = parse(CompletionRequest, json.dumps({**GOOD_COMPLETION, field: value}).encode())
        assert getattr(req.sampling_params(2), field) == SamplingParams(**{field: value}).__dict__[field]
    else:
        assert_400(r, field, "not supported")


def test_bodies_must_be_declared_json(live):
    """A text/plain POST is a CORS "simple request" any web page can send;
    it is refused, and no CORS header invites a browser in."""
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": kind} if kind else {}
        r = httpx.post(live.base_url + "/completions", content=json.dumps(GOOD_COMPLETION), headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["error"]["message"], r.text
    r = httpx.post(live.base_url + "/completions", content=json.dumps(GOOD_COMPLETION),
                   headers={"content-type": "application/json; charset=utf-8", "origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(live.base_url + "/completions", headers={"origin": "http://evil.example",
                                                                 "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_only_for_allowed_origins(make_engine):
    from live import LiveServer

    server = LiveServer(make_engine(), allowed_origins=("http://localhost:3000",))
    try:
        def preflight(origin):
            return httpx.options(server.base_url + "/completions", headers={
                "origin": origin, "access-control-request-method": "POST",
                "access-control-request-headers": "content-type"})
        assert preflight("http://localhost:3000").headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "access-control-allow-origin" not in preflight("http://evil.example").headers
    finally:
        server.stop()


@pytest.mark.parametrize("url", [
    "data:image/png;base64," + base64.b64encode(_png()).decode(),
    "data:image/png;base64," + base64.b64encode(b"not a png at all").decode(),
    "data:image/png;base64,@@@@",
    "https://example.com/cat.png",
    "/etc/passwd",
])
def test_text_model_refuses_every_image_before_reading_it(live, url):
    """Whatever the source (valid, corrupt, remote, a local file), a model
    without images refuses it first; the source checks are in test_images."""
    assert_400(post(live, "/chat/completions", _image_chat(url)), "messages[0].content[1]",
               "model does not accept images")


@pytest.mark.parametrize("extra", [{"seed": -(2**63)}, {"top_k": 10**9, "temperature": 1.0},
                                   {"temperature": 1e-30}, {"top_p": 1e-45}, {"min_tokens": 2},
                                   {"stop": ["\u0000", "x" * 5000]}, {"prompt": [0]}])
def test_odd_but_valid_values_are_served_and_the_engine_survives(live, extra):
    r = post(live, "/completions", {**GOOD_COMPLETION, "ignore_eos": True, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2
    assert httpx.get(live.root + "/health").status_code == 200


def test_oversized_body_is_refused_with_413(make_engine):
    from live import LiveServer

    server = LiveServer(make_engine(), max_body_bytes=1000)
    try:
        r = post(server, "/completions", {**GOOD_COMPLETION, "prompt": "x" * 2000})
        assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["error"]["message"]
        assert post(server, "/completions", GOOD_COMPLETION).status_code == 200
    finally:
        server.stop()


def test_openai_client_sees_bad_request_error(live):
    client = openai.OpenAI(base_url=live.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=0)
    assert e.value.body["param"] == "n"


def test_unknown_route_is_a_json_404(live):
    r = httpx.get(live.base_url + "/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


def test_full_queue_answers_503_with_retry_after(make_engine):
    """With max_waiting=1, the engine thread held still while 4 requests
    queue up: the first is admitted to the queue, the other 3 get 503."""
    from live import LiveServer

    server = LiveServer(make_engine(max_waiting=1))
    release = threading.Event()
    try:
        blocker = threading.Thread(target=server.on_engine, args=(lambda e: release.wait(30),))
        blocker.start()

        async def burst():
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as c:
                tasks = [asyncio.create_task(c.post("/completions", json=GOOD_COMPLETION)) for _ in range(4)]
                while server.async_engine._commands.qsize() < 4:   # all four adds are queued behind the blocker
                    await asyncio.sleep(0.01)
                release.set()
                return await asyncio.gather(*tasks)

        responses = asyncio.run(burst())
        blocker.join()
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 503, 503, 503]
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["code"] == "queue_full"
    finally:
        release.set()
        server.stop()
