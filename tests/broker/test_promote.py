"""promote.lua: move due retries back to the stream, each exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from eventstream.ingest.accept import now_ms
from tests.support.broker import Item, deliver, ingest, settle_retries
from tests.support.conservation import check

FIRST = 1_700_000_000_000


async def schedule(broker: Broker, dues: list[int], attempts: int = 1) -> list[Item]:
    """Ingest, deliver and fail len(dues) events; event i is due at dues[i]."""
    items = await ingest(broker, len(dues))
    got = await deliver(broker, "c1", len(dues))
    retries = [
        (g.entry, event_id, due, attempts, FIRST, env, 0, "", f"RuntimeError: try {attempts}")
        for g, (event_id, env, _), due in zip(got, items, dues, strict=True)
    ]
    assert await settle_retries(broker, "c1", retries) == [True] * len(dues)
    return items


async def test_moves_a_due_retry_back_to_the_stream(broker: Broker, redis: Redis, keys: Keys) -> None:
    now = now_ms()
    [(event_id, env, _)] = await schedule(broker, [now - 1], attempts=2)
    before = await check(redis, keys)

    assert await broker.promote(now, 100) == 1

    s = await check(redis, keys)
    [(entry, fields)] = s.stream
    assert fields == {"id": event_id, "a": "2", "f": str(FIRST), "e": env.decode()}
    assert s.status == {event_id: f"q:{entry}"}
    assert before.retry_error == {event_id: "RuntimeError: try 2"}
    assert s.retry == {}
    assert s.retry_body == {}
    assert s.retry_error == {}  # the failure leaves with the retry
    assert s.pending == []
    assert s.dlq == []
    assert s.counters == before.counters  # the retry was counted when scheduled

    [got] = await broker.read_new("c2", 10, 10)
    assert (got.event_id, got.attempts, got.first_failure_ms, got.envelope) == (
        event_id,
        2,
        FIRST,
        env.decode(),
    )


async def test_due_exactly_now_is_promoted(broker: Broker, redis: Redis, keys: Keys) -> None:
    now = now_ms()
    await schedule(broker, [now])

    assert await broker.promote(now, 100) == 1
    s = await check(redis, keys)
    assert len(s.stream) == 1
    assert s.retry == {}


async def test_future_retries_stay(broker: Broker, redis: Redis, keys: Keys) -> None:
    now = now_ms()
    items = await schedule(broker, [now - 10, now + 60_000, now + 120_000])
    before = await check(redis, keys)

    assert await broker.promote(now, 100) == 1

    s = await check(redis, keys)
    assert s.stream_ids() == [items[0][0]]
    assert s.retry == {k: v for k, v in before.retry.items() if k != items[0][0]}
    assert set(s.retry_body) == {items[1][0], items[2][0]}
    assert set(s.retry_error) == {items[1][0], items[2][0]}
    assert {s.status[i[0]] for i in items[1:]} == {f"r:1:{FIRST}"}

    before = s
    assert await broker.promote(now, 100) == 0
    assert await check(redis, keys) == before


async def test_limit_moves_the_earliest_first(broker: Broker, redis: Redis, keys: Keys) -> None:
    now = now_ms()
    # scheduled in one order, due in another
    items = await schedule(broker, [now - 10, now - 50, now - 30, now - 40, now - 20])

    assert await broker.promote(now, 2) == 2
    s = await check(redis, keys)
    assert s.stream_ids() == [items[1][0], items[3][0]]
    assert set(s.retry) == {items[0][0], items[2][0], items[4][0]}

    assert await broker.promote(now, 10) == 3
    s = await check(redis, keys)
    assert s.stream_ids() == [items[1][0], items[3][0], items[2][0], items[4][0], items[0][0]]
    assert s.retry == {}
    assert s.retry_body == {}


async def test_two_promoters_racing_enqueue_each_retry_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    now = now_ms()
    items = await schedule(broker, [now - i for i in range(50)])
    before = await check(redis, keys)

    moved = await asyncio.gather(broker.promote(now, 1000), broker.promote(now, 1000))

    assert sum(moved) == 50
    assert sorted(moved) == [0, 50]
    s = await check(redis, keys)
    assert Counter(s.stream_ids()) == Counter(i[0] for i in items)
    assert s.retry == {}
    assert s.retry_body == {}
    assert s.counters == before.counters


async def test_many_promoters_with_small_limits_enqueue_each_retry_once(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    now = now_ms()
    items = await schedule(broker, [now - i for i in range(40)] + [now + 60_000])

    async def drain() -> int:
        total = 0
        while moved := await broker.promote(now, 3):
            total += moved
        return total

    moved = await asyncio.gather(*(drain() for _ in range(8)))

    assert sum(moved) == 40
    s = await check(redis, keys)
    assert Counter(s.stream_ids()) == Counter(i[0] for i in items[:40])
    assert list(s.retry) == [items[40][0]]


async def test_promoted_retry_can_fail_again_and_keeps_its_first_failure(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    now = now_ms()
    [(event_id, env, _)] = await schedule(broker, [now - 1])
    await broker.promote(now, 10)
    [got] = await deliver(broker, "c2", 1)
    assert (got.attempts, got.first_failure_ms) == (1, FIRST)

    retry = [(got.entry, event_id, now + 60_000, got.attempts + 1, got.first_failure_ms or now, env)]
    assert await settle_retries(broker, "c2", retry) == [True]

    s = await check(redis, keys)
    assert s.status == {event_id: f"r:2:{FIRST}"}
    assert s.counters == {"received": 1, "failed": 2, "retried": 2}


async def test_empty_retry_set(broker: Broker, redis: Redis, keys: Keys) -> None:
    assert await broker.promote(now_ms(), 100) == 0
    s = await check(redis, keys)
    assert s.stream == []
    assert s.counters == {}
