"""schedule_retry.lua: move failed entries from the stream to the retry set, fenced."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys, ScheduledRetry
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, settle_done, settle_retries
from tests.support.conservation import Pending, check


async def test_moves_the_entry_to_the_retry_set(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    first = now_ms()
    due = first + 30_000

    flags = await settle_retries(broker, "c1", [(got.entry, event_id, due, 1, first, env)])

    assert flags == [True]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.retry == {event_id: due}
    assert s.retry_body == {event_id: env.decode()}
    assert s.status == {event_id: f"r:1:{first}"}
    assert s.dlq == []
    assert s.counters == {"received": 1, "failed": 1, "retried": 1}


async def test_each_envelope_goes_with_its_event(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    now = now_ms()
    retries = [
        (g.entry, event_id, now + 1000 * (i + 1), i + 1, now - i, env)
        for i, (g, (event_id, env, _)) in enumerate(zip(got, items, strict=True))
    ]

    assert await settle_retries(broker, "c1", retries) == [True, True, True]

    s = await check(redis, keys)
    assert s.retry == {r[1]: r[2] for r in retries}
    assert s.retry_body == {r[1]: r[5].decode() for r in retries}
    assert s.status == {r[1]: f"r:{r[3]}:{r[4]}" for r in retries}
    assert s.counters == {"received": 3, "failed": 3, "retried": 3}


async def test_keeps_each_failure_with_its_event_while_it_waits(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    now = now_ms()
    reasons = ["ValueError: <script>alert(1)</script>", "", "KeyError: 'x'\nsecond line"]
    retries = [
        ScheduledRetry(g.entry, event_id, now + 60_000, 1, now, env, reason=reason)
        for g, (event_id, env, _), reason in zip(got, items, reasons, strict=True)
    ]

    _, flags, _ = await broker.settle("c1", retries=retries)

    assert flags == [True, True, True]
    s = await check(redis, keys)
    # an empty failure records nothing; the others are kept as given
    assert s.retry_error == {items[0][0]: reasons[0], items[2][0]: reasons[2]}


async def test_fencing_rejects_another_consumers_entry(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    before = await check(redis, keys)

    flags = await settle_retries(broker, "c2", [(got.entry, event_id, now_ms(), 1, now_ms(), env)])

    assert flags == [False]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "rejected_completions": 1}


async def test_fencing_rejects_an_entry_never_delivered(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    before = await check(redis, keys)
    [(entry, _)] = before.stream

    flags = await settle_retries(broker, "c1", [(entry, event_id, now_ms(), 1, now_ms(), env)])

    assert flags == [False]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "rejected_completions": 1}


async def test_mixed_batch_keeps_envelopes_aligned(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    [a] = await deliver(broker, "c1", 1)
    [b] = await deliver(broker, "c2", 1)
    [c] = await deliver(broker, "c1", 1)
    now = now_ms()
    retries = [
        (a.entry, items[0][0], now + 1, 1, now, items[0][1]),
        (b.entry, items[1][0], now + 2, 1, now, items[1][1]),
        (c.entry, items[2][0], now + 3, 2, now - 5, items[2][1]),
    ]

    assert await settle_retries(broker, "c1", retries) == [True, False, True]

    s = await check(redis, keys)
    assert s.stream_ids() == [items[1][0]]
    assert s.pending == [Pending(b.entry, "c2", 1)]
    assert s.retry == {items[0][0]: now + 1, items[2][0]: now + 3}
    assert s.retry_body == {items[0][0]: items[0][1].decode(), items[2][0]: items[2][1].decode()}
    assert s.status[items[2][0]] == f"r:2:{now - 5}"
    assert s.counters == {"received": 3, "failed": 2, "retried": 2, "rejected_completions": 1}


async def test_scheduling_twice_moves_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    now = now_ms()
    retry = [(got.entry, event_id, now + 10_000, 1, now, env)]

    assert await settle_retries(broker, "c1", retry) == [True]
    before = await check(redis, keys)
    assert await settle_retries(broker, "c1", retry) == [False]

    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "failed": 1, "retried": 1, "rejected_completions": 1}


async def test_complete_after_retry_is_rejected(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    now = now_ms()
    await settle_retries(broker, "c1", [(got.entry, event_id, now + 10_000, 1, now, env)])
    before = await check(redis, keys)

    assert await settle_done(broker, "c1", [(got.entry, event_id, False)]) == [False]

    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.status == {event_id: f"r:1:{now}"}


async def test_a_group_larger_than_one_chunk_keeps_every_field_with_its_event(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    items = await ingest(broker, 2_100)
    got = await deliver(broker, "c1", 2_100)
    now = now_ms()
    retries = [
        (g.entry, event_id, now + i, 1 + i % 4, now - i, env)
        for i, (g, (event_id, env, _)) in enumerate(zip(got, items, strict=True))
    ]

    assert await settle_retries(broker, "c1", retries) == [True] * 2_100

    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.retry == {r[1]: r[2] for r in retries}
    assert s.retry_body == {r[1]: r[5].decode() for r in retries}
    assert s.status == {r[1]: f"r:{r[3]}:{r[4]}" for r in retries}
    assert s.counters == {"received": 2_100, "failed": 2_100, "retried": 2_100}
