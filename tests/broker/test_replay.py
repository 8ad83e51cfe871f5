"""replay.lua: send dead events back to the stream in one step, attempts afresh."""

from __future__ import annotations

from redis.asyncio import Redis

from eventstream.broker import Broker, Keys
from tests.support.broker import deliver, kill, settle_dead, settle_done
from tests.support.conservation import check


async def test_replay_moves_the_event_back_to_the_stream(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, env, _)] = await kill(broker, 1)
    before = await check(redis, keys)
    [(dlq_entry, _)] = before.dlq

    assert await broker.replay_dead([dlq_entry]) == [event_id]

    s = await check(redis, keys)
    assert s.dlq == []
    [(entry, fields)] = s.stream
    assert fields == {"id": event_id, "e": env.decode()}
    assert s.status == {event_id: f"q:{entry}"}
    assert s.pending == []
    assert s.retry == {}
    assert s.retry_body == {}
    assert s.counters == {**before.counters, "replayed": 1}

    [got] = await broker.read_new("c2", 10, 10)
    assert (got.event_id, got.attempts, got.first_failure_ms) == (event_id, 0, None)
    assert await settle_done(broker, "c2", [(got.entry, event_id, False)]) == [True]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.status == {}
    assert s.dlq == []
    assert s.counters == {"received": 1, "dead_lettered": 1, "failed": 1, "replayed": 1, "processed": 1}


async def test_replay_of_an_entry_already_gone(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, _, _)] = await kill(broker, 1)
    [(dlq_entry, _)] = (await check(redis, keys)).dlq
    assert await broker.replay_dead([dlq_entry]) == [event_id]
    before = await check(redis, keys)

    assert await broker.replay_dead([dlq_entry]) == []
    assert await broker.replay_dead(["1-1", "0-1"]) == []

    after = await check(redis, keys)
    assert after == before
    assert after.counter("replayed") == 1


async def test_replay_of_a_deleted_entry(broker: Broker, redis: Redis, keys: Keys) -> None:
    [(event_id, _, _)] = await kill(broker, 1)
    [(dlq_entry, _)] = (await check(redis, keys)).dlq
    assert await broker.delete_dead([(dlq_entry, event_id)]) == [event_id]
    before = await check(redis, keys)

    assert await broker.replay_dead([dlq_entry]) == []

    assert await check(redis, keys) == before


async def test_replay_several_with_repeats_moves_each_once(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await kill(broker, 3)
    dlq = [e for e, _ in (await check(redis, keys)).dlq]

    replayed = await broker.replay_dead([dlq[2], dlq[0], dlq[2], dlq[0]])

    assert replayed == [items[2][0], items[0][0]]
    s = await check(redis, keys)
    assert s.stream_ids() == [items[2][0], items[0][0]]
    assert s.dlq_ids() == [items[1][0]]
    assert s.counter("replayed") == 2


async def test_replayed_event_can_die_again_and_be_replayed_again(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [(event_id, env, _)] = await kill(broker, 1)
    [(first_dlq, _)] = (await check(redis, keys)).dlq
    await broker.replay_dead([first_dlq])
    [got] = await deliver(broker, "c2", 1)
    await settle_dead(broker, "c2", [(got.entry, event_id, "A", env, 1, "again", "", 30, 40, True)])
    s = await check(redis, keys)
    [(second_dlq, fields)] = s.dlq
    assert second_dlq != first_dlq
    assert fields["reason"] == "again"

    assert await broker.replay_dead([first_dlq]) == []  # the old DLQ entry is gone
    assert await broker.replay_dead([second_dlq]) == [event_id]

    s = await check(redis, keys)
    assert s.stream_ids() == [event_id]
    assert s.dlq == []
    assert s.counters == {"received": 1, "dead_lettered": 2, "failed": 2, "replayed": 2}


async def test_replay_nothing(broker: Broker, redis: Redis, keys: Keys) -> None:
    await kill(broker, 1)
    before = await check(redis, keys)

    assert await broker.replay_dead([]) == []

    assert await check(redis, keys) == before
