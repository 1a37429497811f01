"""Per-request output state: streaming deltas, stop strings, finish reasons."""

from jenga.engine.request_state import ReqOutputState
from jenga.sched.params import SamplingParams
from jenga.sched.request import FinishReason


def state(tok, **params) -> ReqOutputState:
    return ReqOutputState("r1", "prompt", (1, 2), SamplingParams(max_tokens=100, **params), tok, 10.0)


def feed(st: ReqOutputState, tok, chunks: list[str], final: FinishReason | None = None):
    """Feed each chunk's tokens as one step; return the step updates."""
    out = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        out.append(st.apply(tuple(tok.encode(chunk)), final if last else None, 11.0 + i))
    return out


def test_deltas_add_up_and_hold_back_split_characters(byte_tokenizer):
    tok = byte_tokenizer
    st = state(tok)
    ids = tok.encode("a😀b")
    ups = [st.apply((t,), None, 11.0) for t in ids[:-1]] + [st.apply((ids[-1],), FinishReason.LENGTH, 12.0)]
    assert [u.output.delta.text for u in ups] == ["a", "", "", "", "😀", "b"]
    last = ups[-1].output
    assert last.finished and last.outputs[0].finish_reason == "length"
    assert last.outputs[0].text == "a😀b" and last.outputs[0].token_ids == tuple(ids)
    assert last.metrics.arrival_time == 10.0 and last.metrics.first_token_time == 11.0
    assert last.metrics.finish_time == 12.0 and last.delta.token_ids == (ids[-1],)
    assert all(u.stopped_by is None for u in ups)


def test_stop_string_across_steps_truncates_and_finishes(byte_tokenizer):
    st = state(byte_tokenizer, stop=("STOP",))
    ups = feed(st, byte_tokenizer, ["Hello S", "TO", "P and more"])
    # only the last len("STOP")-1 chars are held back while a stop may be forming
    assert [u.output.delta.text for u in ups] == ["Hell", "o ", ""]
    assert ups[-1].stopped_by == "STOP"
    out = ups[-1].output
    assert out.finished and out.outputs[0].text == "Hello "
    assert (out.outputs[0].finish_reason, out.outputs[0].stop_reason) == ("stop", "STOP")
    assert "".join(u.output.delta.text for u in ups) == out.outputs[0].text


def test_stop_string_kept_when_asked(byte_tokenizer):
    st = state(byte_tokenizer, stop=("STOP",), include_stop_str_in_output=True)
    ups = feed(st, byte_tokenizer, ["Hello ST", "OP and more"])
    assert ups[0].output.delta.text == "Hello ST"
    assert ups[-1].output.outputs[0].text == "Hello STOP"
    assert ups[-1].output.delta.text == "OP"


def test_held_back_text_is_released_when_no_stop_follows(byte_tokenizer):
    st = state(byte_tokenizer, stop=("STOP",))
    ups = feed(st, byte_tokenizer, ["xx ST", "ART"], final=FinishReason.LENGTH)
    assert ups[0].output.delta.text == "xx"
    assert ups[1].output.delta.text == " START" and ups[1].stopped_by is None
    assert ups[1].output.outputs[0].finish_reason == "length"


def test_stop_in_the_finishing_step_wins_without_asking_the_scheduler(byte_tokenizer):
    st = state(byte_tokenizer, stop=("!",))
    up = feed(st, byte_tokenizer, ["ok! done"], final=FinishReason.LENGTH)[0]
    assert up.output.outputs[0].text == "ok" and up.output.outputs[0].finish_reason == "stop"
    assert up.stopped_by is None      # the scheduler already ended it


def test_stop_token_id_is_the_stop_reason(byte_tokenizer):
    tok = byte_tokenizer
    st = state(tok, stop_token_ids=(tok.encode("!")[0],))
    up = st.apply(tuple(tok.encode("hi!")), FinishReason.STOP, 11.0)
    assert up.output.outputs[0].stop_reason == tok.encode("!")[0]
    eos_state = state(tok)
    up = eos_state.apply(tuple(tok.encode("hi")), FinishReason.STOP, 11.0)
    assert up.output.outputs[0].finish_reason == "stop" and up.output.outputs[0].stop_reason is None


def test_abort_drops_held_back_text(byte_tokenizer):
    st = state(byte_tokenizer, stop=("STOP",))
    feed(st, byte_tokenizer, ["abc ST"])
    out = st.abort(20.0)
    assert out.finished and out.outputs[0].finish_reason == "abort"
    assert out.outputs[0].text == "abc"
