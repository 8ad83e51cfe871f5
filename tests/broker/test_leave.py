"""leave.lua: a stopping worker drops its heartbeat, and its consumer only if idle."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventstream.broker import GROUP, Broker, Keys
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, settle_done
from tests.support.conservation import Pending, check


async def consumers(redis: Redis, keys: Keys) -> dict[str, int]:
    r: Any = redis
    return {c["name"]: int(c["pending"]) for c in await r.xinfo_consumers(keys.stream, GROUP)}


async def test_leave_drops_the_heartbeat_and_an_idle_consumer(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    await settle_done(broker, "c1", [(got.entry, got.event_id, False)])
    await broker.heartbeat("c1", now_ms())
    assert await consumers(redis, keys) == {"c1": 0}

    assert await broker.leave("c1") is True

    s = await check(redis, keys)
    assert s.workers == {}
    assert await consumers(redis, keys) == {}


async def test_leave_keeps_a_consumer_that_still_owns_entries(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # deleting the consumer would drop its PEL entries: they could then never be reclaimed
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    await broker.heartbeat("c1", now_ms())
    before = await check(redis, keys)

    assert await broker.leave("c1") is False

    after = await check(redis, keys)
    assert after.workers == {}
    assert after.pending == before.pending == [Pending(g.entry, "c1", 1) for g in got]
    assert await consumers(redis, keys) == {"c1": 2}


async def test_leave_of_a_consumer_that_never_read_only_drops_the_heartbeat(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await broker.heartbeat("c1", now_ms())

    assert await broker.leave("c1") is True

    s = await check(redis, keys)
    assert s.workers == {}
    assert s.stream == []


async def test_leave_through_the_broker(broker: Broker, redis: Redis, keys: Keys) -> None:
    await broker.ensure_group()
    await broker.heartbeat("c1", now_ms())
    await broker.read_new("c1", 1, 10)  # creates the consumer, delivers nothing
    assert await consumers(redis, keys) == {"c1": 0}

    await broker.leave("c1")

    assert await consumers(redis, keys) == {}
    assert (await check(redis, keys)).workers == {}


async def test_leave_before_the_stream_exists(redis: Redis, keys: Keys) -> None:
    fresh = Broker(redis, keys)  # no ensure_group: neither the stream nor the group exist
    await fresh.heartbeat("c1", now_ms())

    assert await fresh.leave("c1") is True

    s = await check(redis, keys)
    assert s.workers == {}
    assert s.stream == []
