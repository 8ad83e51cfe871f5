"""The store being unavailable: outcomes wait (entries stay pending, unacknowledged), then complete.

The tests run as root, where ``chmod 000`` does not stop SQLite, so the store is made
unavailable in two other ways: a write lock held by another connection, and the
database's directory disappearing (no connection can be opened).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from eventstream.broker import Broker
from eventstream.errors import StoreUnavailable
from eventstream.store import SqlStore, create_store
from eventstream.worker import Worker
from tests.support.broker import put_many
from tests.support.conservation import assert_conserved
from tests.support.factories import SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import BURST_LIMIT_S, pending_count, recording_app


async def _stays_unsettled(redis: Redis, broker: Broker, store: SqlStore, worker: Worker, n: int) -> None:
    """While the store is down: every entry pending, nothing acknowledged or counted."""
    for _ in range(10):  # look several times over ~100 ms: it must stay that way
        assert await pending_count(redis, broker) == n
        assert await redis.xlen(broker.keys.stream) == n
        assert (await broker.counters()).get("processed", 0) == 0
        assert worker.settled == 0
        await asyncio.sleep(0.01)


async def test_store_locked_keeps_events_pending_then_completes(
    redis: Redis, mk: SettingsFactory, broker: Broker, store: SqlStore, tmp_path: Path
) -> None:
    calls: list[str] = []
    ids = await put_many(broker, 4)
    locker = sqlite3.connect(tmp_path / "events.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        worker = Worker(recording_app(calls), mk(), broker, store)
        task = asyncio.create_task(asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S))
        await wait_until(lambda: len(calls) == 4, what="the handlers to run")
        await _stays_unsettled(redis, broker, store, worker, 4)
        locker.execute("COMMIT")
    finally:
        locker.close()
    await task
    assert sorted(calls) == sorted(ids)  # each ran once: waiting did not re-run them
    assert await store.existing(ids) == set(ids)
    assert (await broker.counters())["processed"] == 4
    assert await pending_count(redis, broker) == 0
    await assert_conserved(redis, broker, store, ids)


@pytest.fixture
async def movable_store(tmp_path: Path) -> AsyncIterator[tuple[SqlStore, Path]]:
    """A store in its own directory, with no pooled connection left open."""
    directory = tmp_path / "db"
    directory.mkdir()
    s = create_store(f"sqlite+aiosqlite:///{directory / 'events.db'}")
    await s.create_schema()
    await s.engine.dispose()
    yield s, directory
    await s.close()


async def test_store_unreachable_keeps_events_pending_then_completes(
    redis: Redis, mk: SettingsFactory, broker: Broker, movable_store: tuple[SqlStore, Path], tmp_path: Path
) -> None:
    store, directory = movable_store
    calls: list[str] = []
    ids = await put_many(broker, 3)
    away = tmp_path / "db-away"
    directory.rename(away)  # "unable to open database file"
    with pytest.raises(StoreUnavailable) as caught:
        await store.ping()
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)
    worker = Worker(recording_app(calls), mk(), broker, store)
    task = asyncio.create_task(asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S))
    try:
        await wait_until(lambda: len(calls) == 3, what="the handlers to run")
        await _stays_unsettled(redis, broker, store, worker, 3)
    finally:
        away.rename(directory)
    await task
    assert sorted(calls) == sorted(ids)
    assert await store.existing(ids) == set(ids)
    await assert_conserved(redis, broker, store, ids)


async def test_store_unreachable_for_a_redelivery_check(
    redis: Redis, mk: SettingsFactory, broker: Broker, movable_store: tuple[SqlStore, Path], tmp_path: Path
) -> None:
    """A reclaimed entry is checked against the store before running; that check waits too."""
    store, directory = movable_store
    calls: list[str] = []
    [event_id] = await put_many(broker, 1)
    await broker.read_new("dead-worker", 1, 10)
    away = tmp_path / "db-away"
    directory.rename(away)
    worker = Worker(recording_app(calls), mk(visibility_timeout=0.2), broker, store)
    task = asyncio.create_task(asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S))
    try:
        await wait_until(lambda: _reclaimed(broker), what="the entry to be reclaimed")
        for _ in range(10):
            assert calls == []  # cannot tell whether it was processed: must not run it
            await asyncio.sleep(0.01)
    finally:
        away.rename(directory)
    await task
    assert calls == [event_id]
    await assert_conserved(redis, broker, store, [event_id])


async def _reclaimed(broker: Broker) -> bool:
    counters: dict[str, Any] = await broker.counters()
    return bool(counters.get("reclaimed"))
