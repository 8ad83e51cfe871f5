"""Broker.locate: where a live event is, for every state."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, DeadEntry, Keys, Located
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, settle_dead, settle_done, settle_retries
from tests.support.conservation import check


async def test_queued(broker: Broker) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)

    assert await broker.locate(event_id) == Located("queued", env.decode(), 0)


async def test_queued_before_any_worker_made_the_group(redis: Redis, keys: Keys) -> None:
    api_only = Broker(redis, keys)  # the API alone: no ensure_group
    [(event_id, env, _)] = await ingest(api_only, 1)

    assert await api_only.locate(event_id) == Located("queued", env.decode(), 0)


async def test_processing_counts_the_attempt_under_way(broker: Broker) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    await deliver(broker, "c1", 1)

    assert await broker.locate(event_id) == Located("processing", env.decode(), 1)


async def test_retrying(broker: Broker, redis: Redis) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    due = now_ms() + 60_000
    await settle_retries(broker, "c1", [(got.entry, event_id, due, 2, 123, env)])

    assert await broker.locate(event_id) == Located(
        "retrying", env.decode(), 2, next_attempt_ms=due, first_failure_ms=123
    )


async def test_queued_again_after_promotion_keeps_attempts(broker: Broker, redis: Redis) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    now = now_ms()
    await settle_retries(broker, "c1", [(got.entry, event_id, now - 1, 2, now, env)])
    assert await broker.promote(now, 10) == 1

    assert await broker.locate(event_id) == Located("queued", env.decode(), 2, first_failure_ms=now)
    await deliver(broker, "c2", 1)
    assert await broker.locate(event_id) == Located("processing", env.decode(), 3, first_failure_ms=now)


async def test_dead(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1, type_="T")
    [got] = await deliver(broker, "c1", 1)
    dead = [(got.entry, event_id, "T", env, 4, "KeyError: x", "tb", 100, 200, True)]
    await settle_dead(broker, "c1", dead)
    [(dlq_entry, _)] = (await check(redis, keys)).dlq

    expected = DeadEntry(dlq_entry, event_id, "T", env.decode(), 4, "KeyError: x", "tb", 100, 200)
    assert await broker.locate(event_id) == Located("dead", env.decode(), 4, dead=expected)


async def test_queued_after_replay_with_attempts_afresh(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    await settle_dead(broker, "c1", [(got.entry, event_id, "A", env, 4, "x", "", 1, 2, True)])
    [(dlq_entry, _)] = (await check(redis, keys)).dlq
    await broker.replay_dead([dlq_entry])

    assert await broker.locate(event_id) == Located("queued", env.decode(), 0)


async def test_processed_event_is_not_in_redis(broker: Broker, redis: Redis) -> None:
    [(event_id, _, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    await settle_done(broker, "c1", [(got.entry, event_id, False)])

    assert await broker.locate(event_id) is None


async def test_unknown(broker: Broker) -> None:
    await ingest(broker, 1)

    assert await broker.locate("no-such-event") is None


async def test_each_event_is_located_independently(broker: Broker, redis: Redis) -> None:
    items = await ingest(broker, 3)
    [first, _] = await deliver(broker, "c1", 2)
    await settle_done(broker, "c1", [(first.entry, first.event_id, False)])

    located = [await broker.locate(event_id) for event_id, _, _ in items]

    assert [loc.status if loc else None for loc in located] == [None, "processing", "queued"]
