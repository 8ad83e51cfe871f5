"""The overview's chart fragment, drawn from the history the API and workers record."""

from __future__ import annotations

import re

from eventstream.ops import history
from tests.support.asgi import Api, processed


async def test_the_chart_is_drawn_from_the_recorded_history(api: Api) -> None:
    empty = await api.client.get("/ui/overview/chart")
    assert empty.status_code == 200
    assert "No history yet" in empty.text
    assert "<polyline" not in empty.text
    step = int(history.STEP_S * 1000)
    ttl = 10_000
    # three past steps, one sample each, with events processed after the first. The API's
    # own sampler writes the current step meanwhile, and a step older than the newest is
    # refused: start again from an empty history when it got in between.
    for _ in range(5):
        await api.broker.history._r.delete(api.broker.history.key)
        base = (history._now_ms() // step - 3) * step
        if not await history.record(api.broker, base + 1, ttl):
            continue
        await processed(api, "A", "B", "C")
        if await history.record(api.broker, base + step + 1, ttl) and await history.record(
            api.broker, base + 2 * step + 1, ttl
        ):
            break
    else:
        raise AssertionError("the API's sampler got in between five times")
    r = await api.client.get("/ui/overview/chart", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<section class="card chart" id="chart"'), "the fragment alone"
    assert 'hx-trigger="every 5s"' in r.text
    [points] = re.findall(r'data-series="processed" points="([^"]+)"', r.text)
    assert len(points.split()) == 2, "two steps have a rate (the first sample has none before it)"
    assert re.search(r'data-rate="processed">0\.0<', r.text), "the newest step processed nothing"
