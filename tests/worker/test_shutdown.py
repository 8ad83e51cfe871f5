"""Graceful shutdown: in-flight work finishes within the grace period or is left for the next worker."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.broker.keys import GROUP
from eventstream.event import Event
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.broker import put_many
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import burst, pending_count


async def test_stop_lets_in_flight_handlers_finish_and_record(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    settings = mk(shutdown_grace=10.0)
    started: list[str] = []
    finished: list[str] = []
    gate = asyncio.Event()
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        started.append(event.id)
        await gate.wait()
        finished.append(event.id)

    ids = await put_many(broker, 3)
    worker = Worker(app, settings, broker, store, consumer="stopping")
    task = asyncio.create_task(worker.run())  # not burst: runs until asked to stop
    await wait_until(lambda: len(started) == 3, what="three handlers to start")

    worker.request_stop()
    await asyncio.sleep(0.05)
    assert not task.done()  # waiting for its handlers, not abandoning them
    gate.set()
    await asyncio.wait_for(task, 10)

    assert sorted(finished) == sorted(ids)
    assert await store.existing(ids) == set(ids)
    assert (await broker.counters())["processed"] == 3
    assert await pending_count(redis, broker) == 0
    assert worker.settled == 3
    assert await redis.zscore(broker.keys.workers, "stopping") is None
    places = await assert_conserved(redis, broker, store, ids)
    assert set(places.values()) == {"store"}


async def test_stop_reads_no_new_events(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    calls: list[str] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.id)

    worker = Worker(app, mk(), broker, store)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: _has_consumer(redis, broker, worker.consumer), what="the worker to start")
    worker.request_stop()
    await asyncio.wait_for(task, 10)
    ids = await put_many(broker, 2)  # arrive after the stop
    assert calls == []
    places = await assert_conserved(redis, broker, store, ids)
    assert set(places.values()) == {"stream"}


async def _has_consumer(redis: Redis, broker: Broker, consumer: str) -> bool:
    return await redis.zscore(broker.keys.workers, consumer) is not None


async def test_handler_outliving_grace_is_left_pending_for_the_next_worker(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    calls: list[tuple[str, str]] = []  # (worker, event id)
    quick_done = asyncio.Event()
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        worker_name = "first" if not second_started else "second"
        calls.append((worker_name, event.id))
        if worker_name == "first" and event.payload["i"] == 0:
            await asyncio.sleep(30)  # far past the grace period; cancelled
        quick_done.set()

    second_started = False
    slow_id, quick_id = await put_many(broker, 2)
    first = Worker(
        app, mk(shutdown_grace=0.2, concurrency=2, visibility_timeout=60), broker, store, consumer="first"
    )
    task = asyncio.create_task(first.run())
    await wait_until(lambda: len(calls) == 2 and quick_done.is_set(), what="both handlers to start")
    first.request_stop()
    await asyncio.wait_for(task, 10)

    # the quick one was recorded; the slow one is still pending, owned by "first"
    assert await store.existing([slow_id, quick_id]) == {quick_id}
    pending = await redis.xpending_range(broker.keys.stream, GROUP, "-", "+", 10)
    assert [(p["consumer"], p["times_delivered"]) for p in pending] == [("first", 1)]
    # released: it looks idle for a whole visibility timeout, so it need not wait one
    assert pending[0]["time_since_delivered"] >= 60_000
    assert await redis.hget(broker.keys.status, slow_id) is not None
    # the consumer that still owns work is kept in the group, so its entries can be reclaimed
    consumers = {c["name"] for c in await redis.xinfo_consumers(broker.keys.stream, GROUP)}
    assert "first" in consumers
    assert (await broker.counters())["processed"] == 1

    second_started = True
    await burst(app, mk(visibility_timeout=60), broker, store, consumer="second")
    assert calls[-1] == ("second", slow_id)
    assert await store.existing([slow_id, quick_id]) == {slow_id, quick_id}
    counters = await broker.counters()
    assert counters["processed"] == 2
    assert counters["reclaimed"] == 1
    assert await pending_count(redis, broker) == 0
    await assert_conserved(redis, broker, store, [slow_id, quick_id])


async def test_stop_while_all_slots_are_busy(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    # With every slot taken the reader waits for space; a stop must still end the run.
    settings = mk(concurrency=2, shutdown_grace=5.0)
    started: list[str] = []
    gate = asyncio.Event()
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        started.append(event.id)
        await gate.wait()

    ids = await put_many(broker, 5)
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run())
    await wait_until(lambda: len(started) == 2, what="the two slots to fill")
    worker.request_stop()
    gate.set()
    await asyncio.wait_for(task, 10)
    assert len(started) == 2  # nothing new was started after the stop
    places = await assert_conserved(redis, broker, store, ids)
    assert sorted(places.values()) == ["store", "store", "stream", "stream", "stream"]
    assert await pending_count(redis, broker) == 0


async def test_a_close_that_hangs_is_given_up_so_the_process_can_exit() -> None:
    from contextlib import AsyncExitStack

    from eventstream.worker.process import close_within

    closed: list[str] = []

    async def hang() -> None:
        await asyncio.Event().wait()  # a connection whose close never returns

    async def close_store() -> None:
        closed.append("store")

    closing = AsyncExitStack()
    closing.push_async_callback(close_store)
    closing.push_async_callback(hang)
    assert await close_within(closing, 0.2) is False
    assert closed == []  # the hanging close ran first and was given up


async def test_a_close_that_finishes_closes_everything_in_reverse_order() -> None:
    from contextlib import AsyncExitStack

    from eventstream.worker.process import close_within

    closed: list[str] = []

    async def close(name: str) -> None:
        await asyncio.sleep(0)
        closed.append(name)

    closing = AsyncExitStack()
    closing.push_async_callback(close, "backends")
    closing.push_async_callback(close, "retention")
    assert await close_within(closing, 5.0) is True
    assert closed == ["retention", "backends"]
