"""The overview's chart: rates over the last minutes, drawn on the server as SVG.

No chart library and no script: the page polls the chart's fragment (htmx) and the
server draws it again from the history kept in Redis (eventstream.ops.history), so a
page opened now shows the whole window at once, and the drawing obeys the pages'
strict CSP. A gap in the history (every process down) is a gap in the lines, never a
made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28


@dataclass(frozen=True, slots=True)
class Line:
    name: str  # the rate's JSON name
    label: str
    css: str
    runs: tuple[str, ...]  # SVG polyline points, one run per stretch without a gap
    last: float | None  # the newest value, for the legend


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right_edge: int
    top: int
    bottom_edge: int
    lines: tuple[Line, ...]
    y_ticks: tuple[tuple[float, str], ...]  # (y in px, label)
    x_ticks: tuple[tuple[float, str], ...]  # (x in px, label)
    empty: bool


SERIES = (
    ("processed", "processed/s", "s-processed"),
    ("failed", "failed attempts/s", "s-failed"),
    ("retried", "retried/s", "s-retried"),
    ("deadLettered", "dead-lettered/s", "s-dead"),
)


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _label(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def draw(
    points: Sequence[tuple[int, Mapping[str, float]]], now_ms: int, window_s: int, step_s: float
) -> Chart:
    """The chart of ``points`` (time in ms, rates per second), from ``now - window`` to now.
    Two points further apart than 1.5 steps are not joined."""
    start = now_ms - window_s * 1000
    shown = [(t, rates) for t, rates in points if start <= t <= now_ms]
    peak = max((rates.get(name, 0.0) for _, rates in shown for name, _, _ in SERIES), default=0.0)
    top_value = nice_ceiling(peak)
    x0, x1 = LEFT, WIDTH - RIGHT
    y0, y1 = HEIGHT - BOTTOM, TOP

    def x(t: int) -> float:
        return round(x0 + (t - start) / (window_s * 1000) * (x1 - x0), 1)

    def y(v: float) -> float:
        return round(y0 - min(max(v, 0.0), top_value) / top_value * (y0 - y1), 1)

    gap_ms = step_s * 1500
    lines = []
    for name, label, css in SERIES:
        runs: list[str] = []
        run: list[str] = []
        previous: int | None = None
        for t, rates in shown:
            if previous is not None and t - previous > gap_ms and run:
                runs.append(" ".join(run))
                run = []
            run.append(f"{x(t)},{y(rates.get(name, 0.0))}")
            previous = t
        if run:
            runs.append(" ".join(run))
        last = shown[-1][1].get(name, 0.0) if shown else None
        lines.append(Line(name, label, css, tuple(runs), last))
    y_ticks = tuple((y(v), _label(v)) for v in (0.0, top_value / 2, top_value))
    minutes = window_s // 60
    marks = [m for m in range(0, minutes + 1, 5 if minutes >= 10 else 1)]
    x_ticks = tuple(
        (x(now_ms - m * 60_000), "now" if m == 0 else f"{m} min ago") for m in sorted(marks, reverse=True)
    )
    return Chart(WIDTH, HEIGHT, x0, x1, y1, y0, tuple(lines), y_ticks, x_ticks, not shown)
