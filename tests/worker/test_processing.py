"""The happy path and routing: store rows, counters, concurrency, threads, apps, malformed entries."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream, default_app
from eventstream.broker import Broker
from eventstream.broker.keys import GROUP
from eventstream.event import Event
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.ops.metrics import bucket_index
from eventstream.settings import Settings
from eventstream.store import SqlStore
from tests.support.broker import put, put_many
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.workers import burst, dead_entries, pending_count


async def test_success_writes_store_row_and_counts(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore
) -> None:
    seen: list[Event] = []
    app = EventStream("test")

    @app.handler("ORDER")
    async def handle(event: Event) -> None:
        seen.append(event)

    before = now_ms()
    incoming = IncomingEvent(
        type="ORDER",
        payload={"n": 1, "nested": {"k": [1, "two", None]}},
        source="shop",
        severity="info",
        timestamp=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        id="client-key-1",
    )
    [accepted] = await enqueue(broker, [to_envelope(incoming, None, before)], 60_000)
    event_id = accepted.event_id

    worker = await burst(app, settings, broker, store, consumer="w1")

    assert [e.id for e in seen] == [event_id]
    event = seen[0]
    assert event.attempt == 1
    assert event.type == "ORDER"
    assert event.payload == {"n": 1, "nested": {"k": [1, "two", None]}}
    assert event.source == "shop"
    assert event.severity == "info"
    assert event.timestamp == "2024-05-01T12:00:00Z"
    assert event.idempotency_key == "client-key-1"
    assert event.received_at.tzinfo is not None
    assert int(event.received_at.timestamp() * 1000) == before

    row = await store.get(event_id)
    assert row is not None
    assert row.type == "ORDER"
    assert msgspec.json.decode(row.payload) == {"n": 1, "nested": {"k": [1, "two", None]}}
    assert row.source == "shop"
    assert row.severity == "info"
    assert row.timestamp == "2024-05-01T12:00:00Z"
    assert row.idempotency_key == "client-key-1"
    assert row.replay_of is None
    assert row.attempts == 1
    assert row.received_at_ms == before
    assert row.processed_at_ms >= row.received_at_ms

    counters = await broker.counters()
    assert counters["received"] == 1
    assert counters["processed"] == 1
    for name in ("failed", "retried", "dead_lettered", "rejected_completions", "redelivered_skipped"):
        assert counters.get(name, 0) == 0, name
    hist = await broker.histograms()
    assert hist["handler:count"] == 1
    assert hist["e2e:count"] == 1
    assert sum(v for f, v in hist.items() if f.startswith("handler:") and f.split(":")[1].isdigit()) == 1
    assert worker.settled == 1

    assert await pending_count(redis, broker) == 0
    # a clean stop removes the heartbeat and the idle consumer
    assert await redis.zscore(broker.keys.workers, "w1") is None
    consumers = await redis.xinfo_consumers(broker.keys.stream, GROUP)
    assert all(c["name"] != "w1" for c in consumers)
    assert await assert_conserved(redis, broker, store, [event_id]) == {event_id: "store"}


async def test_histogram_records_handler_duration_bucket(
    settings: Settings, broker: Broker, store: SqlStore
) -> None:
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        await asyncio.sleep(0.03)

    await put(broker, "A")
    await burst(app, settings, broker, store)
    hist = await broker.histograms()
    buckets = {
        int(f.split(":")[1]): v for f, v in hist.items() if f.startswith("handler:") and f[8:].isdigit()
    }
    assert sum(buckets.values()) == 1
    [(index, _)] = buckets.items()
    assert index >= bucket_index(0.03)  # at least the time slept
    assert hist["handler:sum_us"] >= 29_000


async def test_async_handlers_run_concurrently_up_to_the_limit(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    limit = 5
    settings = mk(concurrency=limit, batch_size=50)
    running = 0
    most = 0
    full = asyncio.Event()
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if running >= limit:
            full.set()
        try:
            # Hold the slot until `limit` handlers run at once (proves they overlap);
            # after that, later handlers pass straight through.
            await asyncio.wait_for(full.wait(), 5)
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            running -= 1

    ids = await put_many(broker, 23)
    await burst(app, settings, broker, store)
    assert full.is_set()
    assert most == limit
    assert await store.count() == 23
    places = await assert_conserved(redis, broker, store, ids)
    assert set(places.values()) == {"store"}


async def test_sync_handlers_run_in_worker_threads(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    n = 3
    settings = mk(sync_threads=n, concurrency=10)
    barrier = threading.Barrier(n, timeout=10)
    threads: list[str] = []
    lock = threading.Lock()
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        with lock:
            threads.append(threading.current_thread().name)
        # Passes only when n handlers are inside it at the same time, i.e. in n threads.
        barrier.wait()

    ids = await put_many(broker, n)
    await burst(app, settings, broker, store)
    assert len(threads) == n
    assert all(name.startswith("handler") for name in threads)
    assert threading.main_thread().name not in threads
    counters = await broker.counters()
    assert counters["processed"] == n
    assert counters.get("failed", 0) == 0
    await assert_conserved(redis, broker, store, ids)


async def test_queued_sync_handlers_are_not_charged_for_waiting_for_a_thread(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # One thread, six events: each handler takes a quarter of its timeout, but the
    # last one waits five handler-durations for the thread. Waiting is not running.
    settings = mk(sync_threads=1, concurrency=6, handler_timeout=0.5, max_attempts=1)
    calls: list[str] = []
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        calls.append(event.id)
        time.sleep(0.12)

    ids = await put_many(broker, 6)
    await burst(app, settings, broker, store)
    dead = await dead_entries(redis, broker)
    assert not dead, [d.reason for d in dead.values()]
    assert sorted(calls) == sorted(ids)
    assert (await broker.counters()).get("failed", 0) == 0


async def test_default_app_processes_any_type(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore
) -> None:
    ids = [await put(broker, t) for t in ("A", "payment.created", "x:y-z_1", "A")]
    await burst(default_app(), settings, broker, store)
    assert await store.existing(ids) == set(ids)
    assert (await broker.counters())["processed"] == 4
    await assert_conserved(redis, broker, store, ids)


async def test_type_without_handler_is_dead_lettered(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore
) -> None:
    calls: list[str] = []
    app = EventStream("shop")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.type)

    known = await put(broker, "A")
    unknown = await put(broker, "B")
    await burst(app, settings, broker, store)

    assert calls == ["A"]
    dead = await dead_entries(redis, broker)
    assert set(dead) == {unknown}
    d = dead[unknown]
    assert d.reason.startswith("NoHandler: ")
    assert "'B'" in d.reason
    assert "'shop'" in d.reason
    assert d.type == "B"
    assert d.attempts == 0
    assert d.traceback == ""
    assert 0 < d.first_failure_ms <= d.last_failure_ms
    counters = await broker.counters()
    assert counters["dead_lettered"] == 1
    assert counters.get("failed", 0) == 0  # no handler ran, so no attempt failed
    assert await assert_conserved(redis, broker, store, [known, unknown]) == {known: "store", unknown: "dlq"}


async def test_wildcard_handler_takes_types_without_their_own(
    redis: Redis, settings: Settings, broker: Broker, store: SqlStore
) -> None:
    seen: list[tuple[str, str]] = []
    app = EventStream("test")

    @app.handler("A")
    async def specific(event: Event) -> None:
        seen.append(("specific", event.type))

    @app.handler("*")
    def fallback(event: Event) -> None:
        seen.append(("wildcard", event.type))

    ids = [await put(broker, "A"), await put(broker, "B")]
    await burst(app, settings, broker, store)
    assert sorted(seen) == [("specific", "A"), ("wildcard", "B")]
    await assert_conserved(redis, broker, store, ids)


MALFORMED: list[tuple[str, dict[str, str]]] = [
    ("not json", {"a": "0", "f": "", "e": "this is not json"}),
    ("missing fields", {"a": "0", "f": "", "e": '{"id": "x"}'}),
    ("payload not an object", {"a": "0", "f": "", "e": '{"id":"x","type":"A","payload":[1],"receivedAt":1}'}),
    ("no envelope field", {"a": "0", "f": ""}),
    (
        "receivedAt out of range",
        {"a": "0", "f": "", "e": '{"id":"x","type":"A","payload":{},"receivedAt":100000000000000000}'},
    ),
]


@pytest.mark.parametrize(("label", "fields"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_entry_is_dead_lettered_not_a_crash(
    redis: Redis, label: str, fields: dict[str, str], settings: Settings, broker: Broker, store: SqlStore
) -> None:
    calls: list[str] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.id)

    good_before = await put(broker, "A")
    bad_id = f"bad-{label.replace(' ', '-')}"
    r = redis
    entry = await r.xadd(broker.keys.stream, {"id": bad_id, **fields})
    # what ingest would have done beside the XADD, so the books balance
    await r.hset(broker.keys.status, bad_id, f"q:{entry}")
    await r.hincrby(broker.keys.counters, "received", 1)
    good_after = await put(broker, "A")

    await burst(app, settings, broker, store)

    assert sorted(calls) == sorted([good_before, good_after])
    dead = await dead_entries(redis, broker)
    assert set(dead) == {bad_id}
    assert dead[bad_id].reason.startswith("MalformedEvent: ")
    assert dead[bad_id].envelope == fields.get("e", "")
    counters = await broker.counters()
    assert counters["processed"] == 2
    assert counters["dead_lettered"] == 1
    assert counters.get("failed", 0) == 0
    places = await assert_conserved(redis, broker, store, [good_before, bad_id, good_after])
    assert places[bad_id] == "dlq"


async def test_many_events_mixed_outcomes_are_conserved(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(concurrency=8, batch_size=7, max_attempts=3)
    app = EventStream("test")
    tries: dict[str, int] = {}

    @app.handler("OK")
    async def ok(event: Event) -> None:
        return None

    @app.handler("FLAKY")
    def flaky(event: Event) -> None:
        tries[event.id] = event.attempt
        if event.attempt < 2:
            raise RuntimeError("flaky")

    @app.handler("BAD")
    async def bad(event: Event) -> None:
        raise ValueError("always")

    ids: dict[str, list[str]] = {}
    for type_, n in (("OK", 40), ("FLAKY", 15), ("BAD", 6), ("NONE", 4)):
        ids[type_] = await put_many(broker, n, type_)
    everything: list[str] = [i for group in ids.values() for i in group]

    await burst(app, settings, broker, store)

    places = await assert_conserved(redis, broker, store, everything)
    expected: dict[str, Any] = {**dict.fromkeys(ids["OK"] + ids["FLAKY"], "store")}
    expected.update(dict.fromkeys(ids["BAD"] + ids["NONE"], "dlq"))
    assert places == expected
    counters = await broker.counters()
    assert counters["received"] == 65
    assert counters["processed"] == 55
    assert counters["dead_lettered"] == 10
    # FLAKY: one failure each; BAD: three failures each (two retried, the last dead)
    assert counters["failed"] == 15 + 6 * 3
    assert counters["retried"] == 15 + 6 * 2
    for event_id in ids["FLAKY"]:
        row = await store.get(event_id)
        assert row is not None
        assert row.attempts == 2
    assert await store.count() == 55
