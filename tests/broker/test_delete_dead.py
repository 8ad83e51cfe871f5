"""delete_dead.lua: remove dead events for good, counting each once."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from tests.support.broker import kill
from tests.support.conservation import check


async def test_delete_removes_the_dlq_entry_and_the_status(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, _, _)] = await kill(broker, 1)
    before = await check(redis, keys)
    [(dlq_entry, _)] = before.dlq

    assert await broker.delete_dead([(dlq_entry, event_id)]) == [event_id]

    s = await check(redis, keys)
    assert s.dlq == []
    assert s.status == {}
    assert s.stream == []
    assert s.retry == {}
    assert s.pending == []
    assert s.counters == {**before.counters, "deleted": 1}
    assert await broker.dead_entry_of(event_id) is None
    assert await broker.locate(event_id) is None


async def test_delete_of_an_entry_already_gone(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, _, _)] = await kill(broker, 1)
    [(dlq_entry, _)] = (await check(redis, keys)).dlq
    assert await broker.delete_dead([(dlq_entry, event_id)]) == [event_id]
    before = await check(redis, keys)

    assert await broker.delete_dead([(dlq_entry, event_id)]) == []
    assert await broker.delete_dead([("1-1", "no-such-event")]) == []

    after = await check(redis, keys)
    assert after == before
    assert after.counter("deleted") == 1


async def test_delete_after_replay_leaves_the_replayed_event_alone(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [(event_id, _, _)] = await kill(broker, 1)
    [(dlq_entry, _)] = (await check(redis, keys)).dlq
    assert await broker.replay_dead([dlq_entry]) == [event_id]
    before = await check(redis, keys)

    assert await broker.delete_dead([(dlq_entry, event_id)]) == []

    after = await check(redis, keys)
    assert after == before
    assert after.status[event_id].startswith("q:")  # still queued, not forgotten


async def test_delete_several_with_repeats(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await kill(broker, 3)
    dlq = [e for e, _ in (await check(redis, keys)).dlq]
    pairs = [(dlq[0], items[0][0]), (dlq[2], items[2][0]), (dlq[0], items[0][0])]

    assert await broker.delete_dead(pairs) == [items[0][0], items[2][0]]

    s = await check(redis, keys)
    assert s.dlq_ids() == [items[1][0]]
    assert set(s.status) == {items[1][0]}
    assert s.counter("deleted") == 2


async def test_delete_nothing(broker: Broker, redis: Redis, keys: Keys) -> None:
    await kill(broker, 1)
    before = await check(redis, keys)

    assert await broker.delete_dead([]) == []

    assert await check(redis, keys) == before
