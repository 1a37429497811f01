"""`jenga bench utilisation`: rows, the table, and a small real run."""

from types import SimpleNamespace

import pytest

from jenga.bench.utilisation import HEADER, ROWS, format_row, main, row_record, run_row
from jenga.sim.saturation import SaturationSummary


def test_row_record_and_table_row():
    sat = SaturationSummary(10, 4, 2, 0.98, 0.995, 0.9, 0.97, 0.99, 0.985, 0.011, 0.0175)
    r = SimpleNamespace(allocator="jenga", mem_util=0.98, saturated=True, saturation=sat, mean_decode_batch=71.25,
                        throughput_rps=2.0954, preemptions=8)
    rec = row_record("m", "w", r, 1.0)
    assert rec["util_at_preemption"] == 0.995 and rec["rounded"] == 0.985 and rec["refused_with_room"] == 2
    assert rec["need_over_held"] == pytest.approx(0.98 / 0.99)
    assert format_row(rec) == ("| m | w | jenga | 99.50% | 98.00% | 98.99% | 97.00% | 99.00% | 98.50% | 1.10% / 1.75% "
                               "| 10 / 4 / 2 (90.00%) | 71.2 | 2.095 | 1.00 | 8 |")
    assert HEADER.splitlines()[0].count("|") == format_row(rec).count("|")
    idle = SimpleNamespace(**{**r.__dict__, "saturated": False, "mem_util": 0.3,
                              "saturation": SaturationSummary.of([])})
    assert format_row(row_record("m", "w", idle, 1.0)).startswith("| m | w | jenga | n/a | 30.00%* | n/a | n/a | n/a | n/a "
                                                                  "| n/a / n/a | 0 / 0 / 0 |")


def test_every_heterogeneous_model_has_a_row_and_only_names_a_row():
    assert [r[0] for r in ROWS] == ["llama-3.2-11b-vision", "gemma-3-12b", "gemma-2-9b", "ministral-8b",
                                    "jamba-1.5-mini", "character-ai-70b", "pyramidkv-70b"]
    args = SimpleNamespace(only="gemma-4", json=False, num_requests=5, allocators="jenga")
    with pytest.raises(ValueError, match="no row for gemma-4"):
        main(args)


def test_small_gemma2_run_separates_true_need_from_the_allocators_count():
    comp = run_row("gemma-2-9b", 1, "sharegpt", {"prompt_median": 2000, "output_median": 600}, num_requests=30,
                   fit=8, allocators=("jenga", "max-page"))
    jenga, maxp = comp.reports
    js, ms = jenga.saturation, maxp.saturation
    assert jenga.saturated and maxp.saturated and js.preempt_steps > 0
    # jenga holds the page-rounded need exactly and counts true need
    assert js.used == js.rounded and abs(js.counted - jenga.mem_util) < 1e-6
    # max-page holds every token of the sliding layers and counts them needed
    assert ms.counted > ms.rounded + 0.03 and maxp.mem_util < jenga.mem_util - 0.03
