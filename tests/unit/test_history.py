"""The metrics history's arithmetic (ops/history.py): points from samples, and when a
process tries to sample. The Redis side: tests/metrics/test_history.py."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream.ops import history
from eventstream.ops.history import Point, Sampler, points

STEP = history.STEP_S * 1000


def sample(t: int, taken: int | None = None, **counters: int) -> tuple[int, dict[str, str]]:
    fields = {"t": str(t if taken is None else taken), "queued": "3"}
    fields.update({k: str(v) for k, v in counters.items()})
    return t, fields


def test_rates_are_per_second_over_the_real_time_between_samples() -> None:
    got = points([sample(0, 1_000, processed=10), sample(STEP, 9_000, processed=50)], 0)
    assert got[1].rates is not None
    assert got[1].rates["processed"] == 5.0  # 40 in 8 s, not in the 5 s of a step
    assert got[1].gauges == {
        "queued": 3,
        "pending": 0,
        "scheduled": 0,
        "dlq": 0,
        "workers": 0,
        "oldestWaitingMs": 0,
    }


def test_a_counter_that_went_down_counts_from_zero() -> None:
    got = points([sample(0, processed=1_000, failed=7), sample(STEP, processed=30, failed=9)], 0)
    assert got[1].rates is not None
    assert got[1].rates["processed"] == 6.0
    assert got[1].rates["failed"] == 0.4


def test_samples_whose_clocks_disagree_use_the_step() -> None:
    got = points([sample(0, 9_000, received=0), sample(STEP, 8_000, received=10)], 0)
    assert got[1].rates is not None
    assert got[1].rates["received"] == 2.0


def test_gaps_are_points_with_nothing_and_the_next_has_no_rates() -> None:
    got = points([sample(0), sample(STEP), sample(4 * STEP), sample(5 * STEP)], 0)
    assert [(p.t_ms, p.rates is None, p.gauges is None) for p in got] == [
        (0, True, False),
        (STEP, False, False),
        (2 * STEP, True, True),
        (3 * STEP, True, True),
        (4 * STEP, True, False),
        (5 * STEP, False, False),
    ]


def test_the_window_starts_at_the_first_sample_in_it() -> None:
    got = points([sample(0), sample(STEP), sample(2 * STEP)], STEP - 1)
    assert [p.t_ms for p in got] == [STEP, 2 * STEP]
    assert got[0].rates is not None  # from the sample before the window
    assert points([sample(0)], 1) == []
    assert points([], 0) == []


@pytest.mark.parametrize("bad", [{"t": "x"}, {"t": "1", "processed": "1.5"}])
def test_a_sample_that_cannot_be_read_is_a_gap(bad: dict[str, str]) -> None:
    got = points([sample(0), (STEP, bad), sample(2 * STEP)], 0)
    assert got[1] == Point(STEP, None, None)
    assert got[2].rates is None


def test_the_names_are_the_json_summary_s() -> None:
    from eventstream.api.schemas import HistoryGauges, HistoryRates

    assert list(history.RATES.values()) == list(HistoryRates.__struct_fields__)
    assert list(history.GAUGES.values()) == list(HistoryGauges.__struct_fields__)


class _NoBroker:
    history: Any = None


def test_a_sampler_tries_once_per_step_at_its_own_moment() -> None:
    s = Sampler(_NoBroker(), 10_000, offset_ms=1_200)  # type: ignore[arg-type]
    assert s.next_try_ms(100_000) == 101_200  # early in a step: at its moment
    assert s.next_try_ms(102_000) == 102_000  # late in it and not tried: now
    s._tried = 100_000
    assert s.next_try_ms(102_000) == 106_200  # tried: the next step's moment
    assert s.next_try_ms(107_000) == 107_000
    assert 0 <= Sampler(_NoBroker(), 10_000).offset_ms < STEP // 2  # type: ignore[arg-type]


def test_samples_past_the_end_are_not_shown() -> None:
    hour = 720 * STEP  # a writer whose clock is an hour ahead: no 720 gaps up to it
    got = points([sample(0), sample(STEP), sample(hour)], 0, until_ms=STEP + 1)
    assert [p.t_ms for p in got] == [0, STEP]
