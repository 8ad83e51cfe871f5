"""A dead worker's events are taken over promptly even when every slot is busy."""

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


async def test_reclaimed_events_do_not_wait_behind_new_work(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    started: list[str] = []
    app = EventStream("test")

    @app.handler("D")
    async def orphan(event: Event) -> None:
        started.append("D")

    @app.handler("S")
    async def slow(event: Event) -> None:
        started.append("S")
        await asyncio.sleep(0.3)

    orphans = await put_many(broker, 2, "D")
    held = await broker.read_new("dead-worker", 2, 100)  # a worker that then died
    assert [h.event_id for h in held] == orphans
    new = await put_many(broker, 40, "S")

    worker = Worker(app, mk(concurrency=1, visibility_timeout=30), broker, store, consumer="live")
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: started.count("S") >= 3, what="the worker to be saturated")
        # the dead worker's lease runs out now, while every slot is taken by new work
        await redis.xclaim(
            broker.keys.stream, GROUP, "dead-worker", 0, [h.entry for h in held], idle=31_000, justid=True
        )
        busy_since = started.count("S")
        await wait_until(lambda: started.count("D") == 2, within=20, what="the orphans to run")
        # one reclaim check a second while each new event takes 0.3 s: the orphans
        # run within a few new events, not after the 40 queued ones
        assert started.count("S") - busy_since <= 10, started
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
    places = await assert_conserved(redis, broker, store, orphans + new)
    assert [places[o] for o in orphans] == ["store", "store"]
