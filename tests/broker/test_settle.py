"""Broker.settle: a group's outcomes in one round trip, each kind its own fenced script."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, Completion, DeadLetter, Keys, ScheduledRetry
from tests.support.broker import deliver, ingest
from tests.support.conservation import check


async def test_completes_retries_and_dead_letters_a_group_and_fences_a_stranger(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    items = await ingest(broker, 4)
    got = await deliver(broker, "c1", 4)
    env = {item[0]: item[1] for item in items}
    done = [Completion(got[0].entry, got[0].event_id, False)]
    retries = [ScheduledRetry(got[1].entry, got[1].event_id, 10**13, 1, 5, env[got[1].event_id])]
    dead = [DeadLetter(got[2].entry, got[2].event_id, "A", env[got[2].event_id], 1, "boom", "tb", 5, 6, True)]

    # another consumer names an entry it does not own: refused, the entry stays c1's
    stranger = [Completion(got[3].entry, got[3].event_id, False)]
    assert await broker.settle("c2", stranger, [], []) == ([False], [], [])
    flags = await broker.settle("c1", done, retries, dead, [("handler:3", 1)])

    assert flags == ([True], [True], [True])
    s = await check(redis, keys)
    assert s.stream_ids() == [got[3].event_id]
    assert set(s.retry) == {got[1].event_id}
    assert [d["id"] for _, d in s.dlq] == [got[2].event_id]
    assert s.counters == {
        "received": 4,
        "processed": 1,
        "failed": 2,
        "retried": 1,
        "dead_lettered": 1,
        "rejected_completions": 1,
    }
    assert s.hist == {"handler:3": 1}


async def test_an_empty_group_sends_nothing(broker: Broker) -> None:
    assert await broker.settle("c1", [], [], []) == ([], [], [])
