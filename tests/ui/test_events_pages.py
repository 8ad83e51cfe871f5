"""The dashboard's Events pages in-process (real app over ASGI, real Redis and store, the
real worker): the list by status with filters and keyset paging, find by id, one event's
page, hostile data shown as text, and a read key may look."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from markupsafe import escape

from eventstream.api.ui import events as pages
from eventstream.app import EventStream
from eventstream.errors import PermanentError, Retry
from eventstream.event import Event
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.settings import Settings
from eventstream.worker import Worker
from tests.support.asgi import Api, MakeApi, kill, processed
from tests.support.auth import bearer, create_key, running
from tests.support.factories import recording_app
from tests.support.ui import sign_in
from tests.support.waiting import wait_until

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']
ROW = re.compile(r'<a href="/ui/events/([^"]+)">')


def ids_of(page: str) -> list[str]:
    """The event ids a list page links to, in order."""
    return ROW.findall(page.split('<table id="events">', 1)[1])


def link(page: str, label: str) -> str | None:
    """The href of the pager's link named ``label``, unescaped."""
    m = re.search(r'<a class="button[^"]*" href="([^"]+)"[^>]*>' + label + "</a>", page)
    return html.unescape(m.group(1)) if m else None


def assert_escaped(page: str) -> None:
    """No hostile markup survives as markup; each shows as escaped text."""
    for bad in HOSTILE:
        assert bad not in page
        assert str(escape(bad)) in page, bad  # as the templates escape it: &lt; &gt; &#34;


@asynccontextmanager
async def retrying(api: Api, type_: str, reason: str) -> AsyncIterator[Worker]:
    """A worker whose ``type_`` handler asks for a retry an hour later, until the test ends."""
    app = EventStream()

    @app.handler(type_, max_attempts=5)
    async def later(event: Event) -> None:
        raise Retry(delay=3600, reason=reason)

    worker = Worker(app, api.settings.model_copy(update={"retry_max_delay": 7200.0}), api.broker, api.store)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.request_stop()
        async with asyncio.timeout(10):
            await task


async def all_retrying(api: Api, ids: list[str]) -> bool:
    return all([await status_of(api, i) == "retrying" for i in ids])


async def status_of(api: Api, event_id: str) -> str:
    r = await api.client.get(f"/events/{event_id}")
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


async def test_processed_events_are_paged_by_keyset_and_filtered(api: Api) -> None:
    ids = await processed(api, *(["A", "B"] * 31))  # 62: more than one page of 50
    first = await api.client.get("/ui/events")
    assert first.status_code == 200, first.text
    newest_first = ids[::-1]
    assert ids_of(first.text) == newest_first[: pages.PAGE]
    assert link(first.text, "Newest") is None
    nxt = link(first.text, "Next page")
    assert nxt is not None
    assert "cursor=" in nxt
    second = await api.client.get(nxt)
    assert second.status_code == 200, second.text
    assert ids_of(second.text) == newest_first[pages.PAGE :]
    assert link(second.text, "Next page") is None
    assert link(second.text, "Newest") == "/ui/events?status=processed"

    only_a = await api.client.get("/ui/events", params={"type": "A"})
    assert ids_of(only_a.text) == ids[::2][::-1]
    assert 'value="A"' in only_a.text  # the form keeps the filter
    for params in ({"since": "2999-01-01T00:00"}, {"until": "2000-01-01T00:00:00Z"}):
        none = await api.client.get("/ui/events", params=params)
        assert none.status_code == 200
        assert ids_of(none.text) == []
        assert "match these filters" in none.text
    both = await api.client.get(
        "/ui/events", params={"since": "2000-01-01T00:00", "until": "2999-01-01T00:00"}
    )
    assert len(ids_of(both.text)) == pages.PAGE
    assert 'value="2000-01-01T00:00:00"' in both.text  # shown back in UTC


async def test_a_bad_filter_is_a_clear_422_page(api: Api) -> None:
    for params, words in [
        ({"since": "yesterday"}, "since is not a time"),
        ({"until": "2026-13-45T99:00"}, "until is not a time"),
        ({"status": "nope"}, "status must be one of"),
        ({"type": "<b>"}, "type is not an event type"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "dead", "cursor": "x"}, "cursor"),
        ({"status": "retrying", "cursor": "x"}, "cursor"),
        ({"status": "queued", "cursor": "1-1-99"}, "cursor"),
        ({"status": "dead", "cursor": "1-1-99"}, "cursor"),
    ]:
        r = await api.client.get("/ui/events", params=params)
        assert r.status_code == 422, (params, r.text)
        assert words in r.text, params
        assert 'role="alert"' in r.text
        assert '<form class="filters"' in r.text  # the form is there to fix it
    for status in pages.STATUSES:  # times before 1970 are no trouble either
        for name in ("since", "until"):
            r = await api.client.get("/ui/events", params={"status": status, name: "1960-01-01T00:00"})
            assert r.status_code == 200, (status, name, r.text)
    r = await api.client.get("/ui/events", params={"since": "<script>alert(1)</script>"})
    assert r.status_code == 422
    assert "<script>alert(1)" not in r.text


async def test_dead_events_list_with_reasons_and_type_filter(api: Api) -> None:
    dead = await kill(api, [("PERM", {"n": 1}), ("OTHER", {"n": 2})])
    await processed(api, "OK")
    r = await api.client.get("/ui/events", params={"status": "dead"})
    assert r.status_code == 200, r.text
    assert ids_of(r.text) == dead[::-1]
    assert "cannot handle PERM" in r.text
    assert 'href="/ui/dlq"' in r.text
    r = await api.client.get("/ui/events", params={"status": "dead", "type": "OTHER"})
    assert ids_of(r.text) == [dead[1]]
    r = await api.client.get("/ui/events", params={"status": "dead", "since": "2999-01-01T00:00"})
    assert ids_of(r.text) == []
    r = await api.client.get("/ui/events", params={"status": "dead", "until": "2000-01-01T00:00"})
    assert ids_of(r.text) == []
    r = await api.client.get("/ui/events", params={"status": "dead", "until": "2999-01-01T00:00"})
    assert ids_of(r.text) == dead[::-1]


async def test_queued_and_retrying_events_are_listed_from_redis(make_api: MakeApi) -> None:
    api = await make_api(partitions=2)
    queued = []
    for i, t in enumerate(["Q", "R"] * 30):
        queued.append(await api.accepted(t, {"n": i}))
        # a millisecond apart: two partitions' entries of one millisecond list by partition
        await asyncio.sleep(0.002)
    r = await api.client.get("/ui/events", params={"status": "queued"})
    assert r.status_code == 200, r.text
    assert ids_of(r.text) == queued[: pages.PAGE]  # oldest first, across both partitions
    assert r.text.count('<span class="badge queued">') == pages.PAGE
    nxt = link(r.text, "Next page")
    assert nxt is not None
    r = await api.client.get(nxt)
    assert ids_of(r.text) == queued[pages.PAGE :]
    assert link(r.text, "First page") == "/ui/events?status=queued"
    r = await api.client.get("/ui/events", params={"status": "queued", "type": "R"})
    assert ids_of(r.text) == queued[1::2]

    async with retrying(api, "Q", "upstream busy"):
        await wait_until(lambda: all_retrying(api, queued[::2]), 20, "the Q events to be retrying")
    r = await api.client.get("/ui/events", params={"status": "retrying"})
    assert r.status_code == 200, r.text
    shown = ids_of(r.text)
    assert sorted(shown) == sorted(queued[::2])
    assert r.text.count('<span class="badge retrying">') == 30
    assert "Next attempt" in r.text
    r = await api.client.get("/ui/events", params={"status": "retrying", "type": "R"})
    assert ids_of(r.text) == []
    r = await api.client.get("/ui/events", params={"status": "retrying", "until": "2000-01-01T00:00"})
    assert ids_of(r.text) == []


async def test_retrying_events_are_paged(api: Api) -> None:
    ids = [await api.accepted("LATER", {"n": i}) for i in range(pages.PAGE + 5)]
    async with retrying(api, "LATER", "busy"):
        await wait_until(lambda: all_retrying(api, ids), 20, "every event to be retrying")
    first = await api.client.get("/ui/events", params={"status": "retrying"})
    nxt = link(first.text, "Next page")
    assert nxt is not None
    second = await api.client.get(nxt)
    shown = ids_of(first.text) + ids_of(second.text)
    assert len(ids_of(first.text)) == pages.PAGE
    assert sorted(shown) == sorted(ids)
    assert link(second.text, "Next page") is None
    page = await api.client.get(f"/ui/events/{ids[0]}")
    assert "Failed tries" in page.text
    assert re.search(r'<pre id="reason">[^<]*busy</pre>', page.text), "the failure that scheduled the retry"
    assert "First failed" in page.text
    assert "Next attempt" in page.text


async def test_find_by_id_lands_on_the_event_in_any_state(api: Api) -> None:
    [done] = await processed(api, "OK")
    [dead] = await kill(api, [("PERM", {})])
    waiting = await api.accepted("WAITING", {})
    for event_id in (done, dead, waiting):
        r = await api.client.get("/ui/events/find", params={"id": f"  {event_id}\n"})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == f"/ui/events/{event_id}"
    for junk, status, words in [
        ("00000000-0000-0000-0000-000000000000", 404, "No event with id"),
        ("x" * 65, 404, "at most 64 characters"),
        ("", 400, "Paste an event id"),
        ("a\x00b", 404, "No event with id"),
        ("a\nb", 404, "No event with id"),
        (HOSTILE[0], 404, "No event with id"),
        (HOSTILE[1], 404, "No event with id"),
    ]:
        r = await api.client.get("/ui/events/find", params={"id": junk})
        assert r.status_code == status, (junk, r.text)
        assert words in r.text
        assert '<table id="events">' in r.text  # the events page, with the message
        for bad in HOSTILE:
            assert bad not in r.text


async def test_the_event_page_shows_every_field(api: Api) -> None:
    app = EventStream()

    @app.handler("PARENT")
    async def parent(event: Event) -> None:
        event.emit("CHILD", {"from": event.id})

    @app.handler("CHILD")
    async def child(event: Event) -> None:
        return None

    r = await api.post(
        "PARENT",
        {"amount": 25, "nested": {"list": [1, 2]}},
        source="shop",
        severity="info",
        timestamp="2026-12-01T10:00:00Z",
        orderingKey="order-7",
        headers={"Idempotency-Key": "idem-7"},
    )
    assert r.status_code == 202, r.text
    parent_id = r.json()["eventId"]
    await api.burst(app)
    page = await api.client.get(f"/ui/events/{parent_id}")
    assert page.status_code == 200, page.text
    text = page.text
    for shown in ["PARENT", "shop", "info", "2026-12-01T10:00:00", "idem-7", "order-7", "<details open>"]:
        assert shown in text, shown
    assert '<span class="badge processed" id="status">processed</span>' in text
    assert "&#34;amount&#34;: 25" in text  # indented JSON, as text
    assert "not kept once an event is processed" in text  # no trace context in the store
    [child_id] = (await api.client.get(f"/events/{parent_id}")).json()["children"]
    assert f'href="/ui/events/{child_id}"' in text
    child_page = (await api.client.get(f"/ui/events/{child_id}")).text
    assert f'href="/ui/events/{parent_id}"' in child_page
    assert "Caused by" in child_page

    missing = await api.client.get("/ui/events/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert "not found" in missing.text.lower()
    long = await api.client.get("/ui/events/" + "y" * 200)
    assert long.status_code == 404


async def test_a_dead_event_shows_its_reason_and_traceback_as_text(api: Api) -> None:
    app = EventStream()

    @app.handler("HOSTILE")
    async def hostile(event: Event) -> None:
        raise RuntimeError(f"bad {HOSTILE[0]} {HOSTILE[1]}")

    @app.handler("REFUSED")
    async def refused(event: Event) -> None:
        raise PermanentError(f"refused {HOSTILE[1]}")

    payload = {h: h for h in HOSTILE} | {"list": HOSTILE}
    keys = {"orderingKey": HOSTILE[1], "source": HOSTILE[0], "severity": "<b>x</b>"}
    r = await api.post("HOSTILE", payload, headers={"Idempotency-Key": HOSTILE[0]}, **keys)
    assert r.status_code == 202, r.text
    dead_id = r.json()["eventId"]
    refused_id = await api.accepted("REFUSED", payload, orderingKey=HOSTILE[0])
    await api.burst(app)
    page = await api.client.get(f"/ui/events/{dead_id}")
    assert page.status_code == 200, page.text
    assert '<span class="badge dead" id="status">dead</span>' in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "RuntimeError" in page.text
    assert "First failed" in page.text
    assert_escaped(page.text)
    assert "<b>x</b>" not in page.text
    listing = await api.client.get("/ui/events", params={"status": "dead"})
    assert set(ids_of(listing.text)) == {dead_id, refused_id}
    assert_escaped(listing.text)
    assert "refused &#34;&gt;&lt;img" in listing.text


async def test_a_processed_event_with_hostile_data_shows_it_as_text(api: Api) -> None:
    app = EventStream()

    @app.handler("*")
    async def ok(event: Event) -> None:
        return None

    payload = {h: h for h in HOSTILE}
    r = await api.post("OK", payload, orderingKey=HOSTILE[1], headers={"Idempotency-Key": HOSTILE[0]})
    event_id = r.json()["eventId"]
    await api.burst(app)
    assert await status_of(api, event_id) == "processed"
    page = await api.client.get(f"/ui/events/{event_id}")
    assert_escaped(page.text)
    listing = await api.client.get("/ui/events")
    assert event_id in ids_of(listing.text)
    for bad in HOSTILE:
        assert bad not in listing.text
    assert str(escape(HOSTILE[1])) in listing.text  # its ordering key, as text


async def test_a_read_key_may_look(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "read")
        [event_id] = await processed_with_key(a, token)
        anonymous = await a.client.get("/ui/events")
        assert anonymous.status_code == 303
        r = await sign_in(a.client, token)
        assert r.status_code == 303, r.text
        for path in ("/ui/events", f"/ui/events/{event_id}", "/ui/events?status=dead"):
            r = await a.client.get(path)
            assert r.status_code == 200, (path, r.text)
        r = await a.client.get("/ui/events/find", params={"id": event_id})
        assert r.status_code == 303
        assert event_id in (await a.client.get("/ui/events")).text


async def processed_with_key(a: Api, token: str) -> list[str]:
    writer = await create_key(a, "ingest")
    r = await a.client.post("/events", json={"type": "T", "payload": {}}, headers=bearer(writer))
    assert r.status_code == 202, r.text
    await a.burst(recording_app([]))
    return [r.json()["eventId"]]


async def test_a_type_filter_on_live_events_looks_at_a_bounded_number_per_page(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "BUDGET", pages.PAGE)
    for i in range(2 * pages.PAGE + 20):
        await api.accepted("COMMON", {"n": i})
    rare = await api.accepted("RARE", {})
    path: str | None = "/ui/events?status=queued&type=RARE"
    shown: list[list[str]] = []
    notes = 0
    while path is not None:
        r = await api.client.get(path)
        assert r.status_code == 200, r.text
        shown.append(ids_of(r.text))
        notes += 'id="budget"' in r.text
        path = link(r.text, "Next page")
    assert shown == [[], [], [rare]]
    assert notes == 2


async def test_a_parked_event_is_found_by_id_and_says_it_waits(api: Api) -> None:
    first = await api.accepted("T", {"n": 1}, orderingKey="account-7")
    parked = await api.accepted("T", {"n": 2}, orderingKey="account-7")
    listing = await api.client.get("/ui/events", params={"status": "queued"})
    assert ids_of(listing.text) == [first]  # parked events are not listed
    assert "parked behind earlier events of their ordering key are not listed" in listing.text
    r = await api.client.get("/ui/events/find", params={"id": parked})
    assert r.status_code == 303
    page = await api.client.get(f"/ui/events/{parked}")
    assert "queued: parked behind earlier events of its ordering key since" in page.text


async def test_the_trace_id_of_an_event_kept_in_redis_is_shown(api: Api) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    item = to_envelope(
        IncomingEvent(type="T", payload={}),
        None,
        now_ms(),
        trace=(f"00-{trace_id}-00f067aa0ba902b7-01", None),
    )
    [accepted] = await enqueue(api.broker, [item], 60_000)
    event_id = accepted.event_id
    page = await api.client.get(f"/ui/events/{event_id}")
    assert page.status_code == 200, page.text
    assert f'<dd class="mono">{trace_id}</dd>' in page.text
    untraced = await api.accepted("T", {})
    assert "not kept once an event is processed" not in (await api.client.get(f"/ui/events/{untraced}")).text
