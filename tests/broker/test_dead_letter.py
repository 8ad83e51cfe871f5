"""dead_letter.lua: move entries that will not be tried again to the DLQ, fenced."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, DeadEntry, Keys
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, settle_dead, settle_done
from tests.support.conservation import Pending, check


async def test_moves_the_entry_to_the_dlq_with_every_field(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1, type_="order.paid")
    [got] = await deliver(broker, "c1", 1)
    first, last = now_ms() - 500, now_ms()

    flags = await settle_dead(
        broker,
        "c1",
        [(got.entry, event_id, "order.paid", env, 5, "ValueError: bad", "Traceback ...", first, last, True)],
    )

    assert flags == [True]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.retry == {}
    assert s.retry_body == {}
    [(dlq_entry, fields)] = s.dlq
    assert fields == {
        "id": event_id,
        "t": "order.paid",
        "e": env.decode(),
        "a": "5",
        "reason": "ValueError: bad",
        "tb": "Traceback ...",
        "ff": str(first),
        "lf": str(last),
    }
    assert s.status == {event_id: f"d:{dlq_entry}"}
    assert s.counters == {"received": 1, "dead_lettered": 1, "failed": 1}
    assert await broker.dead_entry_of(event_id) == DeadEntry(
        dlq_entry, event_id, "order.paid", env.decode(), 5, "ValueError: bad", "Traceback ...", first, last
    )


async def test_failed_counts_only_events_whose_handler_ran(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    now = now_ms()
    dead = [
        (g.entry, event_id, "A", env, 1, "why", "", now, now, i == 1)
        for i, (g, (event_id, env, _)) in enumerate(zip(got, items, strict=True))
    ]

    assert await settle_dead(broker, "c1", dead) == [True, True, True]

    s = await check(redis, keys)
    assert s.dlq_ids() == [i[0] for i in items]
    assert s.counters == {"received": 3, "dead_lettered": 3, "failed": 1}


async def test_no_handler_counts_no_failure(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)

    dead = [(got.entry, event_id, "A", env, 1, "no handler", "", 1, 2, False)]
    assert await settle_dead(broker, "c1", dead) == [True]

    s = await check(redis, keys)
    assert s.counters == {"received": 1, "dead_lettered": 1}


async def test_fencing_rejects_another_consumers_entry(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    before = await check(redis, keys)

    flags = await settle_dead(broker, "c2", [(got.entry, event_id, "A", env, 1, "x", "", 1, 2, True)])

    assert flags == [False]
    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "rejected_completions": 1}


async def test_mixed_batch(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 2)
    [theirs] = await deliver(broker, "c2", 1)
    [mine] = await deliver(broker, "c1", 1)
    dead = [
        (theirs.entry, items[0][0], "A", items[0][1], 1, "x", "", 1, 2, True),
        (mine.entry, items[1][0], "A", items[1][1], 1, "y", "", 1, 2, True),
    ]

    assert await settle_dead(broker, "c1", dead) == [False, True]

    s = await check(redis, keys)
    assert s.stream_ids() == [items[0][0]]
    assert s.pending == [Pending(theirs.entry, "c2", 1)]
    assert s.dlq_ids() == [items[1][0]]
    assert s.dlq[0][1]["reason"] == "y"
    assert s.counters == {"received": 2, "dead_lettered": 1, "failed": 1, "rejected_completions": 1}


async def test_dead_lettering_twice_moves_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    dead = [(got.entry, event_id, "A", env, 1, "x", "", 1, 2, True)]

    assert await settle_dead(broker, "c1", dead) == [True]
    before = await check(redis, keys)
    assert await settle_dead(broker, "c1", dead) == [False]
    assert await settle_done(broker, "c1", [(got.entry, event_id, False)]) == [False]

    after = await check(redis, keys)
    assert after.without_counters() == before.without_counters()
    assert after.counters == {"received": 1, "dead_lettered": 1, "failed": 1, "rejected_completions": 2}


async def test_a_group_larger_than_one_chunk(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 1_100)
    got = await deliver(broker, "c1", 1_100)
    dead = [
        (g.entry, event_id, "A", env, 3, f"boom {i}", "", 10, 20, True)
        for i, (g, (event_id, env, _)) in enumerate(zip(got, items, strict=True))
    ]

    assert await settle_dead(broker, "c1", dead) == [True] * 1_100

    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert [(f["id"], f["reason"]) for _, f in s.dlq] == [(d[1], d[5]) for d in dead]
    assert s.status == {f["id"]: f"d:{entry}" for entry, f in s.dlq}
    assert s.counters == {"received": 1_100, "dead_lettered": 1_100, "failed": 1_100}
