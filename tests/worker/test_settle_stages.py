"""Settling is two stages, the store rows then one Redis round trip: a group's rows are
written while Redis records the group before it. These tests drive a real worker: one
holds Redis's writes up while a group is being recorded and sees the next group's rows
written meanwhile; the others make each stage fail in a way that is not an outage (the
store or Redis refusing what the worker asks): the worker stops with that error instead
of running handlers whose outcomes cannot be recorded, and what it could not record
stays pending for another worker."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.errors import BackendError
from eventstream.event import Event
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.broker import put_many
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import BURST_LIMIT_S, pending_count, recording_app

FATAL = "cannot record outcomes; stopping"


async def test_the_next_groups_rows_are_written_while_redis_records_the_group_before(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    first, second = await put_many(broker, 2)
    gates = {first: asyncio.Event(), second: asyncio.Event()}
    started: list[str] = []
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        started.append(event.id)
        await gates[event.id].wait()

    async def stored(*ids: str) -> bool:
        return await store.existing(list(ids)) == set(ids)

    worker = Worker(app, mk(), broker, store)
    task = asyncio.create_task(asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S))
    try:
        await wait_until(lambda: len(started) == 2, what="both handlers to start")
        # Redis's writes held up: the first group's record (a script call) waits in Redis.
        await redis.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            gates[first].set()
            await wait_until(lambda: stored(first), what="the first group's row")
            await asyncio.sleep(0.1)  # its record sent, and held up
            gates[second].set()
            # the second group's row is written while the first one's record still waits
            await wait_until(lambda: stored(first, second), within=5.0, what="the second group's row")
            assert worker.settled == 0
            assert await pending_count(redis, broker) == 2  # nothing recorded in Redis yet
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        await task
    finally:
        for gate in gates.values():
            gate.set()
    assert worker.settled == 2
    assert await pending_count(redis, broker) == 0
    assert (await broker.counters())["processed"] == 2


async def test_a_store_that_refuses_the_rows_stops_the_worker_and_nothing_is_acknowledged(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore, tmp_path: Path
) -> None:
    ids = await put_many(broker, 5)
    with sqlite3.connect(tmp_path / "events.db") as db:  # the database itself refuses rows
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON eventstream_events"
            " BEGIN SELECT RAISE(ABORT, 'rows refused'); END"
        )
    calls: list[str] = []
    worker = Worker(recording_app(calls), mk(), broker, store)
    with capture_logs() as logs, pytest.raises(BackendError, match="rows refused"):
        await asyncio.wait_for(worker.run(), BURST_LIMIT_S)
    assert calls  # handlers ran; their outcomes could not be recorded
    assert any(e["event"] == FATAL for e in logs)
    assert await store.existing(ids) == set()
    assert await pending_count(redis, broker) == 5  # all still pending: reclaimed later
    assert await redis.xlen(broker.keys.stream) == 5
    assert (await broker.counters()).get("processed", 0) == 0
    assert worker.settled == 0


async def test_redis_refusing_the_record_stops_the_worker_after_the_rows_are_written(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore
) -> None:
    ids = await put_many(broker, 5)
    await redis.set(broker.keys.hist, "not a hash")  # the complete script's HINCRBY fails
    calls: list[str] = []
    worker = Worker(recording_app(calls), mk(), broker, store)
    with capture_logs() as logs, pytest.raises(BackendError, match="WRONGTYPE"):
        await asyncio.wait_for(worker.run(), BURST_LIMIT_S)
    assert sorted(calls) == sorted(ids)
    assert any(e["event"] == FATAL for e in logs)
    # Store first: the rows were written before Redis was asked, so another worker's
    # redelivery is acknowledged without running the handlers again.
    assert await store.existing(ids) == set(ids)
    assert worker.settled == 0
