"""SamplingParams reject bad values with errors naming the field."""

import pytest

from jenga.sched.params import SamplingParams


@pytest.mark.parametrize("kw, field", [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_k": -2}, "top_k"), ({"seed": 2**64}, "seed"), ({"seed": -2**63 - 1}, "seed"), ({"seed": 1.5}, "seed"), ({"min_tokens": 99, "max_tokens": 5}, "min_tokens"), ({"stop": ("",)}, "stop"),
])
def test_bad_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kw)


def test_stop_string_becomes_a_tuple_and_greedy():
    p = SamplingParams(stop="END", temperature=0)
    assert p.stop == ("END",) and p.greedy
