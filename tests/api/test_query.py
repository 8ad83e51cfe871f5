"""GET /events (processed, newest first, keyset paging, filters) and GET /events/{id}."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import datetime
from typing import Any

import msgspec
import pytest

from eventstream.app import EventStream, default_app
from eventstream.errors import PermanentError, Retry
from eventstream.event import Event, ms_to_iso
from eventstream.worker import Worker
from tests.support.asgi import Api, assert_problem
from tests.support.factories import row

ITEM_KEYS = {"id", "type", "payload", "status", "attempts", "processedAt"}


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


async def page_all(api: Api, query: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every item of /events?query, following nextCursor; (items, pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = f"?limit={limit}" + (f"&{query}" if query else "")
        if cursor is not None:
            params += f"&cursor={cursor}"
        r = await api.client.get(f"/events{params}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "nextCursor"}
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return items, pages
        assert len(body["items"]) == limit
        assert pages < 100


async def test_processed_events_newest_first_with_paging(api: Api) -> None:
    posted = {await api.accepted("T", {"i": i}): i for i in range(7)}
    assert (await api.client.get("/events")).json() == {"items": [], "nextCursor": None}
    await api.burst(default_app())

    items, pages = await page_all(api, "", limit=3)
    assert pages == 3
    assert len({x["id"] for x in items}) == len(items)  # no repeats
    assert {x["id"] for x in items} == set(posted)
    assert len(items) == 7
    for x in items:
        assert set(x) >= ITEM_KEYS
        assert x["status"] == "processed"
        assert x["attempts"] == 1
        assert x["type"] == "T"
        assert x["payload"] == {"i": posted[x["id"]]}
        assert x["processedAt"].endswith("Z")
    keys = [(at(x["processedAt"]), x["id"]) for x in items]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == len(keys)


async def test_default_limit_is_50(api: Api) -> None:
    await api.store.record([row(f"id-{i:03d}", 1_000 + i) for i in range(60)])
    body = (await api.client.get("/events")).json()
    assert len(body["items"]) == 50
    assert body["items"][0]["id"] == "id-059"
    assert body["nextCursor"] is not None


async def test_paging_over_equal_processing_times_has_no_repeats_or_gaps(api: Api) -> None:
    rows = [row(f"e{i:03d}", 5_000 + i // 10) for i in range(43)]  # ten rows share each ms
    await api.store.record(rows)
    for limit in (1, 4, 10, 43, 50):
        items, pages = await page_all(api, "", limit)
        assert [x["id"] for x in items] == [
            r.id for r in sorted(rows, key=lambda r: (r.processed_at_ms, r.id), reverse=True)
        ]
        assert pages == max(1, -(-43 // limit))


async def test_filters_type_since_until(api: Api) -> None:
    base = 1_700_000_000_000
    rows = [row(f"a{i}", base + i * 1000, "A" if i % 2 == 0 else "B") for i in range(10)]
    await api.store.record(rows)

    items, _ = await page_all(api, "type=A", limit=2)
    assert [x["id"] for x in items] == ["a8", "a6", "a4", "a2", "a0"]
    assert {x["type"] for x in items} == {"A"}

    since, until = ms_to_iso(base + 3000), ms_to_iso(base + 7000)
    items, _ = await page_all(api, f"since={since}&until={until}", limit=3)
    assert [x["id"] for x in items] == ["a6", "a5", "a4", "a3"]  # since inclusive, until exclusive

    items, _ = await page_all(api, f"since={since}&until={until}&type=B", limit=1)
    assert [x["id"] for x in items] == ["a5", "a3"]

    # an offset other than UTC means the same instant
    items, _ = await page_all(api, "since=2023-11-14T23:13:28%2B01:00", limit=50)
    assert [x["id"] for x in items] == ["a9", "a8"]

    items, _ = await page_all(api, "type=NONE", limit=5)
    assert items == []


async def test_item_carries_every_recorded_field(api: Api) -> None:
    await api.store.record(
        [
            row(
                "full",
                1_700_000_000_123,
                "T",
                payload='{"k": [1, "two"]}',
                source="src",
                severity="warn",
                timestamp="2026-01-01T00:00:00Z",
                idempotency_key="key",
                replay_of="orig",
                attempts=3,
                received_at_ms=1_700_000_000_000,
                ordering_key="account-7",
                causation_id="parent",
                children='["child-0", "child-1"]',
            )
        ]
    )
    [item] = (await api.client.get("/events")).json()["items"]
    assert item == {
        "id": "full",
        "type": "T",
        "payload": {"k": [1, "two"]},
        "status": "processed",
        "attempts": 3,
        "source": "src",
        "severity": "warn",
        "timestamp": "2026-01-01T00:00:00Z",
        "idempotencyKey": "key",
        "replayOf": "orig",
        "orderingKey": "account-7",
        "causationId": "parent",
        "children": ["child-0", "child-1"],
        "receivedAt": "2023-11-14T22:13:20.000Z",
        "processedAt": "2023-11-14T22:13:20.123Z",
    }
    assert (await api.client.get("/events/full")).json() == item


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


BAD_QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("cursor=not-a-cursor", ("cursor",)),
    ("cursor=" + cursor_of(["x", 1]), ("cursor",)),
    ("cursor=" + cursor_of([1]), ("cursor",)),
    ("cursor=" + cursor_of([10**30, "x"]), ("cursor",)),
    ("cursor=" + cursor_of([-(2**63) - 1, "x"]), ("cursor",)),
    ("cursor=" + cursor_of([1, "a\x00b"]), ("cursor",)),
    ("cursor=" + "A" * 513, ("cursor",)),
    ("limit=0", ("limit",)),
    ("limit=1001", ("limit",)),
    ("limit=-1", ("limit",)),
    ("limit=ten", ("limit",)),
    ("type=a%20b", ("type",)),
    ("type=" + "A" * 129, ("type",)),
    ("since=yesterday", ("since",)),
    ("until=2026-13-01T00:00:00Z", ("until",)),
    ("since=2026-01-01T00:00:00", ("since", "time zone")),
    ("until=2026-01-01T00:00:00", ("until", "time zone")),
]


@pytest.mark.parametrize(("query", "words"), BAD_QUERIES, ids=[q[:40] for q, _ in BAD_QUERIES])
async def test_bad_query_is_422(api: Api, query: str, words: tuple[str, ...]) -> None:
    r = await api.client.get(f"/events?{query}")
    assert_problem(r, 422, *words)


async def test_limit_bounds_are_inclusive(api: Api) -> None:
    await api.store.record([row("only", 1)])
    assert (await api.client.get("/events?limit=1")).status_code == 200
    assert (await api.client.get("/events?limit=1000")).status_code == 200


# ---- GET /events/{id} in every state --------------------------------------------------


async def test_queued_event(api: Api) -> None:
    before = int(time.time() * 1000)
    event_id = await api.accepted("Q", {"a": 1}, source="s")
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert got["id"] == event_id
    assert got["status"] == "queued"
    assert got["attempts"] == 0
    assert (got["type"], got["payload"], got["source"]) == ("Q", {"a": 1}, "s")
    assert at(got["receivedAt"]).timestamp() * 1000 >= before - 1
    assert "nextAttemptAt" not in got
    assert "reason" not in got


async def test_processing_then_processed(api: Api) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    app = EventStream()

    @app.handler("SLOW")
    async def slow(event: Event) -> None:
        started.set()
        await release.wait()

    event_id = await api.accepted("SLOW", {"n": 1})
    worker = Worker(app, api.settings, api.broker, api.store)
    task = asyncio.create_task(worker.run(burst=True))
    try:
        async with asyncio.timeout(10):
            await started.wait()
        got = (await api.client.get(f"/events/{event_id}")).json()
        assert got["status"] == "processing"
        assert got["attempts"] == 1
        summary = await api.summary()
        assert (summary["queued"], summary["pending"]) == (0, 1)
    finally:
        release.set()
        async with asyncio.timeout(10):
            await task
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert got["status"] == "processed"
    assert got["attempts"] == 1
    assert got["payload"] == {"n": 1}
    assert at(got["processedAt"]) >= at(got["receivedAt"])


async def test_retrying_shows_next_attempt(api: Api) -> None:
    app = EventStream()

    @app.handler("LATER")
    async def later(event: Event) -> None:
        raise Retry(delay=3600, reason="upstream busy")

    event_id = await api.accepted("LATER", {})
    # a Retry delay is capped by EVENTSTREAM_RETRY_MAX_DELAY, short in the tests' settings
    settings = api.settings.model_copy(update={"retry_max_delay": 7200.0})
    worker = Worker(app, settings, api.broker, api.store)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while (got := (await api.client.get(f"/events/{event_id}")).json())["status"] != "retrying":
                assert got["status"] in {"queued", "processing"}
                await asyncio.sleep(0.01)
    finally:
        worker.request_stop()
        async with asyncio.timeout(10):
            await task
    now = time.time()
    assert got["attempts"] == 1
    assert got["type"] == "LATER"
    assert now + 3500 < at(got["nextAttemptAt"]).timestamp() < now + 3700
    summary = await api.summary()
    assert (summary["scheduled"], summary["retried"], summary["failed"]) == (1, 1, 1)


async def test_dead_event_shows_reason(api: Api) -> None:
    app = EventStream()

    @app.handler("DOOMED")
    async def doomed(event: Event) -> None:
        raise PermanentError("card declined")

    event_id = await api.accepted("DOOMED", {"card": "x"})
    await api.burst(app)
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert got["status"] == "dead"
    assert got["attempts"] == 1
    assert "card declined" in got["reason"]
    assert at(got["failedAt"]) >= at(got["receivedAt"])
    assert got["payload"] == {"card": "x"}


async def test_event_without_a_handler_is_dead_with_a_reason(api: Api) -> None:
    event_id = await api.accepted("NOBODY", {})
    await api.burst(EventStream())
    got = (await api.client.get(f"/events/{event_id}")).json()
    assert got["status"] == "dead"
    assert "NOBODY" in got["reason"]


@pytest.mark.parametrize("event_id", ["nope", "0190b3c2-0000-7000-8000-000000000000", "x" * 65, "a%00b"])
async def test_unknown_event_is_404(api: Api, event_id: str) -> None:
    assert_problem(await api.client.get(f"/events/{event_id}"), 404, "not found")
