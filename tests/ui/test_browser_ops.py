"""The operator's pages in a real browser against REAL API and worker processes: the
workers page names a running worker's pid, the retries page shows a real retry, the
overview's tiles follow the deployment without a reload, hostile names stay text."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from eventstream.broker import Broker, Keys, connect
from eventstream.ingest.accept import now_ms
from tests.support.browser import Watched, run_async
from tests.support.processes import Api, Cluster
from tests.support.waiting import wait_for

HOSTILE = '<img src=x onerror="alert(1)">'


async def beat(cluster: Cluster, consumer: str) -> None:
    """A heartbeat written as a worker writes its own (Broker.heartbeat)."""
    redis = await connect(cluster.redis_url)
    try:
        await Broker(redis, Keys(cluster.prefix)).heartbeat(consumer, now_ms())
    finally:
        await redis.aclose()


def test_workers_and_retries_show_a_real_worker_and_its_retry(
    tab: Watched, live: Api, cluster: Cluster, client: httpx.Client
) -> None:
    worker = cluster.start_worker(EVENTSTREAM_RETRY_DELAY="300", EVENTSTREAM_RETRY_MAX_DELAY="300")
    run_async(beat(cluster, HOSTILE))
    dialogs: list[str] = []
    page = tab.page
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def shown() -> bool:
        page.goto(live.url + "/ui/workers")
        return page.locator("td.pid", has_text=str(worker.pid)).count() == 1

    wait_for(shown, "the worker's heartbeat on the workers page", timeout=15)
    row = page.locator("tr", has=page.locator("td.pid", has_text=str(worker.pid)))
    assert row.locator(".badge.live").is_visible()
    assert page.locator("td.name", has_text=HOSTILE).is_visible(), "a hostile name shows as text"
    tab.shoot("workers")

    r = client.post("/events", json={"type": "FLAKY", "payload": {"order": 1}})
    assert r.status_code == 202, r.text
    event_id = r.json()["eventId"]

    def listed() -> bool:
        page.goto(live.url + "/ui/retries")
        return page.locator(f"a[href$='/events/{event_id}']").count() == 1

    wait_for(listed, "the failed event on the retries page", timeout=15)
    assert page.locator("td.reason", has_text="flaky dependency timed out (attempt 1)").is_visible()
    tab.shoot("retries")
    assert dialogs == []
    cluster.stop(worker)
    tab.assert_clean()


def test_the_overview_tiles_follow_the_deployment_without_a_reload(
    tab: Watched, live: Api, cluster: Cluster, client: httpx.Client
) -> None:
    page = tab.page
    page.goto(live.url + "/ui")
    page.evaluate("window.notReloaded = true")
    processed = page.locator('[data-metric="processed"]')
    assert processed.inner_text() == "0"

    worker = cluster.start_worker()
    for n in range(3):
        assert client.post("/events", json={"type": "OK", "payload": {"n": n}}).status_code == 202

    # htmx polls every 5 s and swaps the tiles in place
    expect(processed).to_have_text("3", timeout=15_000)
    expect(page.locator('[data-metric="workers"]')).to_have_text("1", timeout=15_000)
    assert page.evaluate("window.notReloaded") is True, "the tiles changed in place"
    cluster.stop(worker)
    tab.assert_clean()
