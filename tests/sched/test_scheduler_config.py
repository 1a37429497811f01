"""SchedulerConfig validation: every bad value names its field."""

import pytest

from jenga.sched.config import SchedulerConfig


def test_mamba_checkpoint_interval_defaults_to_auto_and_takes_a_positive_int():
    assert SchedulerConfig().mamba_checkpoint_interval is None
    assert SchedulerConfig(mamba_checkpoint_interval=1536).mamba_checkpoint_interval == 1536


@pytest.mark.parametrize("field,value", [
    ("mamba_checkpoint_interval", 0), ("mamba_checkpoint_interval", -512), ("mamba_checkpoint_interval", 1.5),
    ("mamba_checkpoint_interval", "auto"), ("mamba_checkpoint_interval", True),
    ("max_num_batched_tokens", 0), ("max_num_seqs", None), ("max_waiting", -1),
    ("shared_prefill_wait", -1), ("num_speculative_tokens", 17),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SchedulerConfig(**{field: value})
