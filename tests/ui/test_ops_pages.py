"""The operator's pages in-process (real app over ASGI, real Redis, real workers): the
scheduled retries with their failures, the workers by their heartbeats (stale ones
marked), the partitions, and the overview's live tiles."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from eventstream import EventStream
from eventstream.api.ui import ops
from eventstream.ingest.accept import now_ms
from eventstream.worker import Worker
from tests.support.asgi import Api, MakeApi, running
from tests.support.cluster import LocalCluster
from tests.support.factories import make_settings
from tests.support.waiting import wait_until

HOSTILE = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def failing(message: str) -> EventStream:
    app = EventStream()

    @app.handler("FLAKY", max_attempts=5)
    async def flaky(event: Any) -> None:
        raise ValueError(message)

    return app


@asynccontextmanager
async def worker_running(api: Api, app: EventStream) -> AsyncIterator[Worker]:
    """A worker on the API's keys and store, running (it has beaten its heart) until the
    block ends."""
    worker = Worker(app, api.settings, api.broker, api.store)
    task = asyncio.create_task(worker.run())

    async def beating() -> bool:
        beats, _ = await api.broker.views.workers(100)
        return any(b.consumer == worker.consumer for b in beats)

    try:
        await wait_until(beating, 10, "the worker's first heartbeat")
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


async def status_of(api: Api, event_id: str) -> str:
    r = await api.client.get(f"/events/{event_id}")
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


async def test_retries_list_each_waiting_event_with_its_failure_and_due_time(make_api: MakeApi) -> None:
    api = await make_api(retry_delay=600, retry_max_delay=600)
    message = f"{HOSTILE} is not a number\nsecond line {IMG}"
    event_id = await api.accepted("FLAKY", {"n": 1})
    async with worker_running(api, failing(message)):

        async def retrying() -> bool:
            return await status_of(api, event_id) == "retrying"

        await wait_until(retrying, 15, "the event to wait for its retry")

    r = await api.client.get("/ui/retries")
    assert r.status_code == 200, r.text
    html = r.text
    assert f'href="/ui/events/{event_id}"' in html
    row = html[html.index(event_id) :]
    assert "FLAKY" in row
    assert re.search(r'<td class="num">1</td>', row), "one attempt made so far"
    # due within the retry delay (with jitter), shown in UTC and from now
    due = (await api.client.get(f"/events/{event_id}")).json()["nextAttemptAt"]
    assert due[:10] + " " + due[11:19] + " UTC" in row
    assert re.search(r'class="hint">in \d+ (min|s)', row), row
    assert "overdue" not in row
    # the first line shown, the whole failure in <details>; every character as text
    assert "<summary>ValueError: &lt;script&gt;alert(1)&lt;/script&gt; is not a number</summary>" in html
    assert "second line &#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert HOSTILE not in html
    assert "<img" not in html
    assert "1 event waiting for another attempt" in html


async def test_retries_page_through_later_ones_and_refuse_a_bad_cursor(api: Api) -> None:
    r = await api.client.get("/ui/retries")
    assert r.status_code == 200
    assert "No retry is scheduled" in r.text
    for bad in ["nope", "12:x:abc", "1:2:", HOSTILE]:
        r = await api.client.get("/ui/retries", params={"after": bad})
        assert r.status_code == 422, (bad, r.text)
        assert "is not a cursor" in r.text
        assert HOSTILE not in r.text
    r = await api.client.get("/ui/retries", params={"after": f"{now_ms()}:0:some-id"})
    assert r.status_code == 200
    assert "after the last page" in r.text


def row_of(html: str, name: str) -> str:
    start = html.index(name)
    return html[start : html.index("</tr>", start)]


async def test_workers_show_live_ones_and_mark_stale_ones(api: Api) -> None:
    ttl_s = max(api.settings.visibility_timeout, 10)
    gone = "gone-host-12345-abcdef"
    await api.broker.heartbeat(gone, now_ms() - int(ttl_s * 1000) - 60_000)  # a worker that died
    await api.broker.heartbeat(HOSTILE + IMG, now_ms())
    async with worker_running(api, failing("x")) as worker:
        report = {
            "count": 3,
            "entry": "1-0",
            "partition": 0,
            "eventId": "ev-1",
            "ageMs": 95000,
            "allowedMs": 40000,
        }
        await api.broker.report_overdue(worker.consumer, json.dumps(report))
        r = await api.client.get("/ui/workers")
        assert r.status_code == 200, r.text
        html = r.text
        mine = row_of(html, worker.consumer)
        assert f">{socket.gethostname()}<" in mine
        assert f">{os.getpid()}<" in mine
        assert "badge live" in mine
        assert "badge stale" not in mine
        assert "3 overdue" in mine
        assert "1 min 35 s held, 40 s allowed" in mine
        assert 'href="/ui/events/ev-1"' in mine
        old = row_of(html, gone)
        assert ">gone-host<" in old
        assert ">12345<" in old
        assert "badge stale" in old
        assert "&lt;script&gt;" in html
        assert HOSTILE not in html
        assert "<img" not in html
        assert f"older than {ttl_s:.0f} s" in html
    r = await api.client.get("/ui/workers")
    assert worker.consumer not in r.text, "a worker that stops cleanly removes its heartbeat"


async def test_partitions_show_one_row_each_and_the_nav_names_them(make_api: MakeApi) -> None:
    api = await make_api(partitions=4)
    for n in range(8):
        await api.accepted("T", {"n": n})
    r = await api.client.get("/ui/partitions")
    assert r.status_code == 200, r.text
    body = r.text[r.text.index("<tbody>") : r.text.index("</tbody>")]
    assert body.count("<tr>") == 4
    queued = [int(v) for v in re.findall(r'data-gauge="queued">(\d+)<', body)]
    assert len(queued) == 4
    assert sum(queued) == 8
    assert 'href="/ui/partitions"' in r.text
    overview = await api.client.get("/ui")
    assert 'href="/ui/partitions"' in overview.text


async def test_one_partition_hides_the_page_from_the_nav_and_says_so(api: Api) -> None:
    overview = await api.client.get("/ui")
    assert 'href="/ui/partitions"' not in overview.text
    r = await api.client.get("/ui/partitions")
    assert r.status_code == 200
    assert "This deployment has one partition" in r.text
    assert "<table" not in r.text


def tile(html: str, name: str) -> str:
    m = re.search(rf'data-metric="{name}">([^<]*)<', html)
    assert m, name
    return m.group(1)


async def test_the_overview_fragment_is_the_tiles_alone_and_follows_the_state(api: Api) -> None:
    page = await api.client.get("/ui")
    assert 'hx-get="/ui/overview/figures"' in page.text
    assert 'hx-trigger="every 5s"' in page.text
    assert 'id="chart"' in page.text  # the chart, polled on its own
    assert 'hx-get="/ui/overview/chart"' in page.text
    r = await api.client.get("/ui/overview/figures", headers={"HX-Request": "true"})
    assert r.status_code == 200
    html = r.text.strip()
    assert html.startswith('<section class="tiles" id="figures"')
    assert html.endswith("</section>")
    assert "<html" not in html
    assert "<nav" not in html
    assert tile(html, "queued") == "0"
    assert tile(html, "oldestWaitingMs") == "0 ms"
    for name in ["pending", "scheduled", "dlq", "workers", "processed", "failed", "deadLettered"]:
        assert tile(html, name) == "0"

    await api.accepted("T", {"n": 1})
    await api.accepted("T", {"n": 2})
    await asyncio.sleep(0.05)
    after = (await api.client.get("/ui/overview/figures")).text
    assert tile(after, "queued") == "2"
    assert tile(after, "oldestWaitingMs").endswith("ms")
    assert tile(after, "oldestWaitingMs") != "0 ms"


async def test_on_a_cluster_each_partition_names_its_node(
    redis_cluster: LocalCluster, prefix: str, tmp_path: Path
) -> None:
    async with running(make_settings(redis_cluster.url, prefix, tmp_path, partitions=4)) as api:
        r = await api.client.get("/ui/partitions")
    assert r.status_code == 200, r.text
    assert "<th>Node</th>" in r.text
    nodes = re.findall(r'<td class="mono">([^<]+)</td>', r.text)
    assert len(nodes) == 4
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", n) for n in nodes), nodes
    assert len(set(nodes)) > 1, "the partitions spread over the primaries"


async def test_later_retries_are_a_click_away(make_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "RETRIES_PAGE", 2)
    api = await make_api(retry_delay=600, retry_max_delay=600)
    ids = [await api.accepted("FLAKY", {"n": n}) for n in range(3)]
    async with worker_running(api, failing("ValueError: no")):

        async def all_retrying() -> bool:
            return all([await status_of(api, i) == "retrying" for i in ids])

        await wait_until(all_retrying, 15, "three events to wait for their retries")

    first = await api.client.get("/ui/retries")
    assert first.text.count('href="/ui/events/') == 2
    later = re.search(r'href="(/ui/retries\?after=[^"]+)"', first.text)
    assert later, "a link to the later ones"
    second = await api.client.get(html.unescape(later.group(1)))
    assert second.status_code == 200, second.text
    assert second.text.count('href="/ui/events/') == 1
    shown = re.findall(r'href="/ui/events/([^"]+)"', first.text + second.text)
    assert sorted(shown) == sorted(ids)
    assert "/ui/retries?after=" not in second.text, "nothing after the last"
