"""Helpers for worker tests: enqueue, bounded waits, bounded bursts, conservation checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, DeadEntry
from eventstream.broker.keys import GROUP
from eventstream.ingest.accept import IncomingEvent, enqueue, now_ms, to_envelope
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.conftest import make_settings

# A burst that has not finished after this long is hung: fail instead of waiting for
# the global pytest timeout. Generous on purpose; it is a hang guard, not a speed check.
BURST_LIMIT_S = 30.0

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def mk(redis_url: str, prefix: str, tmp_path: Path) -> SettingsFactory:
    """Settings for this test's prefix with overrides: ``mk(visibility_timeout=0.2)``."""

    def build(**overrides: Any) -> Settings:
        return make_settings(redis_url, prefix, tmp_path, **overrides)

    return build


async def put(broker: Broker, type_: str = "A", payload: dict[str, Any] | None = None) -> str:
    """Enqueue one event the way the API does; returns its event id."""
    item = to_envelope(IncomingEvent(type=type_, payload=payload or {}), None, now_ms())
    [accepted] = await enqueue(broker, [item], 60_000)
    assert not accepted.duplicate
    return accepted.event_id


async def put_many(broker: Broker, n: int, type_: str = "A") -> list[str]:
    now = now_ms()
    items = [to_envelope(IncomingEvent(type=type_, payload={"i": i}), None, now) for i in range(n)]
    accepted = await enqueue(broker, items, 60_000)
    return [a.event_id for a in accepted]


async def burst(
    app: EventStream,
    settings: Settings,
    broker: Broker,
    store: SqlStore,
    consumer: str | None = None,
) -> Worker:
    """run_burst with a hang guard."""
    worker = Worker(app, settings, broker, store, consumer=consumer)
    await asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S)
    return worker


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll every 10 ms until ``predicate`` holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def dead_entries(redis: Redis, broker: Broker) -> dict[str, DeadEntry]:
    """Every DLQ entry, by event id."""
    raw = await redis.xrange(broker.keys.dlq, "-", "+")
    out: dict[str, DeadEntry] = {}
    for entry, fields in raw:
        dead = DeadEntry.from_fields(entry, fields)
        assert dead.event_id not in out, f"{dead.event_id} is in the DLQ twice"
        out[dead.event_id] = dead
    return out


async def pending_count(redis: Redis, broker: Broker) -> int:
    info = await redis.xpending(broker.keys.stream, GROUP)
    return int(info["pending"])


async def assert_conserved(redis: Redis, broker: Broker, store: SqlStore, ids: list[str]) -> dict[str, str]:
    """received == processed + dlq + scheduled + XLEN(stream); each id in exactly one place.

    Also checks the status hash agrees with where each event is. Returns id -> place.
    """
    r = redis
    k = broker.keys
    counters = await broker.counters()
    stream_len = int(await r.xlen(k.stream))
    scheduled = int(await r.zcard(k.retry))
    dead = await dead_entries(redis, broker)
    assert counters.get("received", 0) == (
        counters.get("processed", 0) + len(dead) + scheduled + stream_len
    ), (counters, len(dead), scheduled, stream_len)

    in_store = await store.existing(ids)
    in_retry = set(await r.zrange(k.retry, 0, -1))
    in_stream = {f["id"] for _, f in await r.xrange(k.stream, "-", "+")}
    places: dict[str, str] = {}
    for event_id in ids:
        where = [
            name
            for name, found in (
                ("store", event_id in in_store),
                ("dlq", event_id in dead),
                ("retry", event_id in in_retry),
                ("stream", event_id in in_stream),
            )
            if found
        ]
        assert len(where) == 1, f"{event_id} is in {where or 'no place'}"
        places[event_id] = where[0]
        status = await r.hget(k.status, event_id)
        expected_kind = {"store": None, "dlq": "d", "retry": "r", "stream": "q"}[where[0]]
        kind = status.partition(":")[0] if status else None
        assert kind == expected_kind, f"{event_id} is in {where[0]} but its status is {status!r}"
    return places
