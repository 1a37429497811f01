"""The server end to end with the real `openai` client: completions and chat,
streaming and not, stop strings, seeds, metrics, health and API keys."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jenga.sched.params import SamplingParams

PROMPT = "hello world, how are you"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello world"}]


def offline(engine, prompt, params: SamplingParams):
    """The final output of one request run alone on `engine`."""
    engine.add_request("ref", prompt, params)
    final = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            final = out
    return final


@pytest.fixture(scope="module")
def reference(make_engine):
    return make_engine()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=live.base_url, api_key="unused", max_retries=0)


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_completion_matches_offline_greedy_run(client, reference, live):
    ref = offline(reference, reference.tokenizer.encode(PROMPT), SamplingParams(max_tokens=12, temperature=0.0,
                                                                               ignore_eos=True))
    got = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=0,
                                    extra_body={"ignore_eos": True})
    assert got.choices[0].text == ref.outputs[0].text
    assert got.choices[0].finish_reason == "length"
    assert got.usage.prompt_tokens == len(reference.tokenizer.encode(PROMPT))
    assert got.usage.completion_tokens == 12
    assert got.usage.total_tokens == got.usage.prompt_tokens + 12
    assert got.id.startswith("cmpl-") and got.model == "tiny"


def test_streamed_completion_adds_up_to_the_whole(client):
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0,
                                      extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])


def test_token_id_prompt_is_accepted(client, reference):
    ids = reference.tokenizer.encode(PROMPT)
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


def test_chat_matches_offline_run_of_the_template(client, reference):
    ids = reference.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    ref = offline(reference, ids, SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == ref.outputs[0].text
    assert got.usage.prompt_tokens == len(ids) and got.usage.completion_tokens == 8


def test_chat_stream_starts_with_role_and_ends_with_reason(client):
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                           extra_body={"ignore_eos": True})
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_stop_string_truncates_and_reports_stop(client):
    text = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    # a printable piece of the greedy text whose first occurrence is not at the start
    at, stop = next((i, text[i:i + 2]) for i in range(1, len(text) - 1)
                    if text[i:i + 2].isascii() and text[i:i + 2].isprintable() and text.find(text[i:i + 2]) == i)
    got = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=16, temperature=0, stop=[stop],
                                    extra_body={"ignore_eos": True})
    assert got.choices[0].text == text[:at]
    assert got.choices[0].finish_reason == "stop"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.completions.create(model="tiny", prompt=PROMPT, max_tokens=12, temperature=1.0, top_p=0.9,
                                         seed=seed, extra_body={"ignore_eos": True}).choices[0].text
    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c


def test_chat_without_max_tokens_uses_the_rest_of_the_context(client, live):
    got = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert got.choices[0].finish_reason == "length"
    assert got.usage.total_tokens == live.app.state.server.max_model_len == 256


def _metrics(live) -> dict:
    text = httpx.get(live.root + "/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_report_requests_memory_and_latency(client, live):
    live.wait_idle()
    before = _metrics(live)
    for _ in range(3):
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=5, temperature=0,
                                  extra_body={"ignore_eos": True})
    live.wait_idle()
    after = _metrics(live)
    key = ("jenga_requests_total", (("finish_reason", "length"),))
    assert after[key] - before.get(key, 0) == 3
    assert after[("jenga_time_to_first_token_seconds_count", ())] - \
        before.get(("jenga_time_to_first_token_seconds_count", ()), 0) == 3
    assert after[("jenga_time_per_output_token_seconds_count", ())] - \
        before.get(("jenga_time_per_output_token_seconds_count", ()), 0) == 3
    assert after[("jenga_generation_tokens_total", ())] - before.get(("jenga_generation_tokens_total", ()), 0) == 15
    usage = live.on_engine(lambda e: e.scheduler.manager.usage())
    assert after[("jenga_large_pages_free", ())] == usage.free_large_pages
    assert after[("jenga_num_requests_running", ())] == 0
    assert after[("jenga_pages_moved_total", ())] == live.on_engine(lambda e: e.scheduler.stats.num_pages_moved)
    assert after[("jenga_num_requests_waiting", ())] == 0
    for g in usage.per_group:
        labels = (("group", str(g.gid)), ("label", g.label))
        assert after[("jenga_group_used_bytes", labels)] == g.used_bytes == 0
        assert after[("jenga_group_cached_bytes", labels)] == g.cached_bytes
        assert ("jenga_group_prefix_cache_hit_rate", labels) in after
    assert 0.0 < after[("jenga_prefix_cache_hit_rate", ())] <= 1.0   # the same prompt came three times


def test_health(live):
    assert httpx.get(live.root + "/health").status_code == 200


def test_api_key_is_required_when_set(make_engine):
    from live import LiveServer

    server = LiveServer(make_engine(), api_key="s3cret")
    try:
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.get(server.base_url + "/models", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "invalid_api_key"
        bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model="tiny", prompt=PROMPT, max_tokens=2)
        good = openai.OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0)
        assert good.completions.create(model="tiny", prompt=PROMPT, max_tokens=2).usage.completion_tokens >= 1
        assert httpx.get(server.root + "/health").status_code == 200   # probes need no key
    finally:
        server.stop()


def test_n_completions_share_one_prompt(client, reference):
    """n=3 seeded: choices 0..2, each what a single request seeded seed + i
    gives; streamed, every index adds up to its whole text."""
    params = dict(model="tiny", prompt=PROMPT, max_tokens=6, temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    got = client.completions.create(n=3, **params)
    assert [c.index for c in got.choices] == [0, 1, 2]
    singles = [client.completions.create(**{**params, "seed": 7 + i}).choices[0].text for i in range(3)]
    assert [c.text for c in got.choices] == singles
    assert got.usage.completion_tokens == 18
    texts = {0: "", 1: "", 2: ""}
    for ch in client.completions.create(n=3, stream=True, **params):
        for c in ch.choices:
            texts[c.index] += c.text
    assert [texts[i] for i in range(3)] == singles
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, n=2, max_tokens=4, temperature=0)
    assert [c.index for c in chat.choices] == [0, 1] and chat.choices[0].message.content == \
        chat.choices[1].message.content
    roles = [c.delta.role for ch in client.chat.completions.create(model="tiny", messages=MESSAGES, n=2, max_tokens=3,
                                                                   temperature=0, stream=True)
             for c in ch.choices if c.delta.role]
    assert roles == ["assistant", "assistant"]


def test_best_of_and_too_many_samples_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, best_of=2)
    assert e.value.body["param"] == "best_of"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=PROMPT, max_tokens=2, n=1000)
    assert e.value.body["param"] == "n"
