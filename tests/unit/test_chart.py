"""The overview chart's drawing: scale, gaps, window."""

from __future__ import annotations

import pytest

from eventstream.api.ui.chart import HEIGHT, draw, nice_ceiling

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (0.4, 1), (1, 1), (1.2, 2), (3, 5), (7, 10), (21, 25), (180, 200), (4_100, 5_000)],
)
def test_the_scale_ends_at_a_round_number_above_the_peak(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == ceiling


def test_points_become_lines_and_a_gap_stays_a_gap() -> None:
    step = 5
    times = [NOW - 60_000 + i * step * 1000 for i in range(13)]
    del times[5:8]  # 15 s without a sample: every process was down
    points = [(t, {"processed": 100.0, "failed": 0.0}) for t in times]
    chart = draw(points, NOW, 900, step)
    processed = next(line for line in chart.lines if line.name == "processed")
    assert len(processed.runs) == 2
    assert [len(r.split()) for r in processed.runs] == [5, 5]
    assert processed.last == 100.0
    ys = {float(p.split(",")[1]) for run in processed.runs for p in run.split()}
    assert ys == {chart.top}, "the peak is the top of the scale (100 is a round number)"
    failed = next(line for line in chart.lines if line.name == "failed")
    assert {float(p.split(",")[1]) for run in failed.runs for p in run.split()} == {HEIGHT - 28}
    assert not chart.empty


def test_only_the_window_is_drawn_and_an_empty_history_says_so() -> None:
    old = [(NOW - 3_600_000, {"processed": 5.0})]
    chart = draw(old, NOW, 900, 5)
    assert chart.empty
    assert all(line.runs == () for line in chart.lines)
    assert chart.x_ticks[-1][1] == "now"
    assert [label for _, label in chart.x_ticks] == ["15 min ago", "10 min ago", "5 min ago", "now"]
