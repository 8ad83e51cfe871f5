"""Crashes and races: dedupe on redelivery, the crash limit, lease renewal, fencing."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.broker.keys import GROUP
from eventstream.errors import PermanentError
from eventstream.event import Event, decode_envelope
from eventstream.ingest.accept import now_ms
from eventstream.store import ProcessedRow, SqlStore
from eventstream.worker import Worker
from tests.support.broker import put, settle_retries
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import BURST_LIMIT_S, burst, dead_entries, pending_count, recording_app


async def test_redelivered_event_already_in_store_is_acked_without_running(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    stored_id = await put(broker, "A")
    unstored_id = await put(broker, "A")
    # A worker reads both, writes the store row of the first, and dies before the ack.
    entries = await broker.read_new("dead-worker", 10, 10)
    assert [e.event_id for e in entries] == [stored_id, unstored_id]
    env = decode_envelope(entries[0].envelope)
    await store.record(
        [
            ProcessedRow(
                id=env.id,
                type=env.type,
                payload="{}",
                source=None,
                severity=None,
                timestamp=None,
                idempotency_key=None,
                replay_of=None,
                attempts=1,
                received_at_ms=env.receivedAt,
                processed_at_ms=12345,
            )
        ]
    )

    calls: list[str] = []
    await burst(recording_app(calls), mk(visibility_timeout=0.2), broker, store, consumer="rescuer")

    assert calls == [unstored_id]  # the stored one was not run again
    row = await store.get(stored_id)
    assert row is not None
    assert (row.attempts, row.processed_at_ms) == (1, 12345)  # untouched
    counters = await broker.counters()
    assert counters["reclaimed"] == 2
    assert counters["redelivered_skipped"] == 1
    assert counters["processed"] == 2
    assert counters.get("failed", 0) == 0
    assert await pending_count(redis, broker) == 0
    places = await assert_conserved(redis, broker, store, [stored_id, unstored_id])
    assert set(places.values()) == {"store"}


async def test_promoted_retry_already_in_store_is_not_run_again(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # An entry carrying attempts > 0 is checked against the store even on first read.
    event_id = await put(broker, "A")
    [e] = await broker.read_new("dead-worker", 10, 10)
    # it failed once and was scheduled, then (say) a replayed copy got processed
    due = now_ms()
    [ok] = await settle_retries(
        broker, "dead-worker", [(e.entry, event_id, due, 1, due, e.envelope.encode())]
    )
    assert ok
    env = decode_envelope(e.envelope)
    await store.record(
        [ProcessedRow(env.id, env.type, "{}", None, None, None, None, None, 1, env.receivedAt, now_ms())]
    )
    calls: list[str] = []
    await burst(recording_app(calls), mk(), broker, store)
    assert calls == []
    counters = await broker.counters()
    assert counters["redelivered_skipped"] == 1
    await assert_conserved(redis, broker, store, [event_id])


async def _deliver_times(redis: Redis, broker: Broker, times: int) -> str:
    """Deliver the oldest entry ``times`` times to dead consumers; returns its entry id."""
    [e] = await broker.read_new("dead-1", 1, 10)
    for i in range(2, times + 1):
        claimed = await redis.xclaim(broker.keys.stream, GROUP, f"dead-{i}", 0, [e.entry])
        assert claimed
    return e.entry


@pytest.mark.parametrize("max_deliveries", [1, 3])
async def test_entry_delivered_max_deliveries_times_goes_to_dlq(
    redis: Redis, max_deliveries: int, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    poisoned = await put(broker, "A")
    await _deliver_times(redis, broker, max_deliveries)
    survivor = await put(broker, "A")
    if max_deliveries > 1:
        await _deliver_times(redis, broker, max_deliveries - 1)  # one delivery short of the limit

    calls: list[str] = []
    settings = mk(visibility_timeout=0.2, max_deliveries=max_deliveries)
    started = now_ms()
    await burst(recording_app(calls), settings, broker, store)

    assert calls == [survivor]
    dead = (await dead_entries(redis, broker))[poisoned]
    assert dead.reason.startswith(f"WorkerLost: delivered {max_deliveries} times")
    assert dead.attempts == max_deliveries
    assert dead.type == "A"
    assert dead.traceback == ""
    assert started <= dead.first_failure_ms <= dead.last_failure_ms <= now_ms()
    counters = await broker.counters()
    assert counters["dead_lettered"] == 1
    assert counters.get("failed", 0) == 0
    # the survivor was reclaimed (and run) only when it had been delivered before
    assert counters.get("reclaimed", 0) == (1 if max_deliveries > 1 else 0)
    assert await assert_conserved(redis, broker, store, [poisoned, survivor]) == {
        poisoned: "dlq",
        survivor: "store",
    }


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_lease_renewal_keeps_a_long_handler_from_being_reclaimed(
    redis: Redis, kind: str, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(visibility_timeout=0.25)
    calls: list[str] = []
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    app = EventStream("test")
    handler_s = 0.9  # more than three visibility timeouts

    if kind == "async":

        @app.handler("A")
        async def long_async(event: Event) -> None:
            calls.append(event.id)
            started.set()
            await asyncio.sleep(handler_s)

    else:

        @app.handler("A")
        def long_sync(event: Event) -> None:
            calls.append(event.id)
            loop.call_soon_threadsafe(started.set)
            time.sleep(handler_s)

    event_id = await put(broker, "A")
    first = asyncio.create_task(burst(app, settings, broker, store, consumer="first"))
    await asyncio.wait_for(started.wait(), 10)
    # A second worker runs the whole time the handler does, trying to reclaim.
    second = asyncio.create_task(burst(app, settings, broker, store, consumer="second"))
    await asyncio.gather(first, second)

    assert calls == [event_id]
    counters = await broker.counters()
    assert counters.get("reclaimed", 0) == 0
    assert counters.get("rejected_completions", 0) == 0
    assert counters["processed"] == 1
    await assert_conserved(redis, broker, store, [event_id])


@pytest.mark.parametrize("late_outcome", ["success", "failure", "permanent"])
async def test_fenced_worker_outcome_is_rejected(
    redis: Redis, late_outcome: str, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    """The first worker stalls (its lease is not renewed in time), the second reclaims and
    finishes; whatever the first one reports afterwards is refused."""
    calls: list[str] = []
    first_started = asyncio.Event()
    second_done = asyncio.Event()
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:  # the stalled first worker
            first_started.set()
            await asyncio.wait_for(second_done.wait(), 10)
            if late_outcome == "failure":
                raise ValueError("late failure")
            if late_outcome == "permanent":
                raise PermanentError("late permanent failure")
        else:
            second_done.set()

    event_id = await put(broker, "A")
    # visibility timeout 30 s: the first worker renews its lease only every 10 s
    slow = Worker(app, mk(visibility_timeout=30.0), broker, store, consumer="stalled")
    slow_task = asyncio.create_task(asyncio.wait_for(slow.run(burst=True), BURST_LIMIT_S))
    await asyncio.wait_for(first_started.wait(), 10)
    rescuer = await burst(app, mk(visibility_timeout=0.2), broker, store, consumer="rescuer")
    await slow_task

    assert len(calls) == 2
    assert rescuer.settled == 1
    counters = await broker.counters()
    assert counters["reclaimed"] == 1
    assert counters["rejected_completions"] == 1
    assert counters["processed"] == 1
    assert counters.get("failed", 0) == 0
    assert counters.get("retried", 0) == 0
    assert counters.get("dead_lettered", 0) == 0
    assert await store.count() == 1
    assert await redis.zcard(broker.keys.retry) == 0
    assert await redis.xlen(broker.keys.dlq) == 0
    assert await assert_conserved(redis, broker, store, [event_id]) == {event_id: "store"}


async def test_sync_handler_outcome_is_fenced_too(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    calls: list[str] = []
    release = threading.Event()
    first_started = asyncio.Event()
    loop = asyncio.get_running_loop()
    app = EventStream("test")

    @app.handler("A")
    def handle(event: Event) -> None:
        calls.append(event.id)
        if len(calls) == 1:
            loop.call_soon_threadsafe(first_started.set)
            release.wait(10)

    event_id = await put(broker, "A")
    slow = Worker(app, mk(visibility_timeout=30.0), broker, store, consumer="stalled")
    slow_task = asyncio.create_task(asyncio.wait_for(slow.run(burst=True), BURST_LIMIT_S))
    try:
        await asyncio.wait_for(first_started.wait(), 10)
        await burst(app, mk(visibility_timeout=0.2), broker, store, consumer="rescuer")
    finally:
        release.set()
    await slow_task
    counters = await broker.counters()
    assert (counters["processed"], counters["rejected_completions"]) == (1, 1)
    assert await assert_conserved(redis, broker, store, [event_id]) == {event_id: "store"}


async def test_worker_reclaims_only_idle_entries_of_others(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    """A live worker's fresh entry is not taken; once it goes quiet past the timeout, it is."""
    event_id = await put(broker, "A")
    await broker.read_new("quiet", 1, 10)
    calls: list[str] = []
    worker = Worker(recording_app(calls), mk(visibility_timeout=0.3), broker, store, consumer="live")
    task = asyncio.create_task(worker.run(burst=True))
    await wait_until(lambda: bool(calls), what="the entry to be reclaimed after its timeout")
    await asyncio.wait_for(task, 10)
    assert calls == [event_id]
    await assert_conserved(redis, broker, store, [event_id])
