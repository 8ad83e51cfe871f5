"""The overview's chart in a real browser against REAL API and worker processes: it
moves without a reload as the processes record the history."""

from __future__ import annotations

import httpx

from tests.support.browser import Watched
from tests.support.processes import Api, Cluster


def test_the_chart_moves_without_a_reload(
    tab: Watched, live: Api, cluster: Cluster, client: httpx.Client
) -> None:
    cluster.start_worker()
    page = tab.page
    page.goto(live.url + "/ui")
    page.evaluate("window.stayed = true")  # gone if the page reloads
    for n in range(40):
        assert client.post("/events", json={"type": "OK", "payload": {"n": n}}).status_code == 202
    # a rate needs two samples (5 s apart); the chart is drawn again every 5 s
    page.wait_for_function(
        """() => {
            const line = document.querySelector('polyline[data-series="processed"]');
            return line !== null && line.getAttribute("points").trim().split(/\\s+/).length >= 2;
        }""",
        timeout=30_000,
    )
    assert page.evaluate("window.stayed") is True
    legend = page.locator('[data-rate="processed"]').inner_text()
    assert float(legend) >= 0
    tab.shoot("overview-chart")
    tab.assert_clean()
