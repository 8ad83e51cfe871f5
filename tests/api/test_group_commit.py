"""GroupCommit: concurrent requests share script calls, each gets exactly its own results."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from eventstream.broker import Broker, Keys, Layout, connect
from eventstream.embedded import free_port
from eventstream.errors import BackendError, RedisUnavailable
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import GroupCommit, Item, now_ms, to_envelope
from eventstream.settings import Settings
from tests.support.broker import item_in


def items(n: int, key: str | None = None) -> list[Item]:
    return [to_envelope(IncomingEvent(type="A", payload={"i": i}), key, now_ms()) for i in range(n)]


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_submits_share_round_trips_and_get_their_own_results(
    broker: Broker, redis: Redis
) -> None:
    commit = GroupCommit(broker, 60_000)
    requests = [items(1 + i % 3) for i in range(200)]
    before = await evalsha_calls(redis)
    results = await asyncio.gather(*(commit.submit(r) for r in requests))
    calls = await evalsha_calls(redis) - before

    for sent, got in zip(requests, results, strict=True):
        assert [a.event_id for a in got] == [event_id for event_id, *_ in sent]
        assert not any(a.duplicate for a in got)
    total = sum(len(r) for r in requests)
    assert await redis.xlen(broker.keys.stream) == total
    assert (await broker.counters())["received"] == total
    assert calls < len(requests)  # grouped: fewer script calls than requests


async def test_one_key_posted_concurrently_is_one_event(broker: Broker, redis: Redis) -> None:
    commit = GroupCommit(broker, 60_000)
    results = await asyncio.gather(*(commit.submit(items(1, key="same")) for _ in range(50)))
    firsts = [r[0] for r in results]
    assert sum(not a.duplicate for a in firsts) == 1
    assert len({a.event_id for a in firsts}) == 1
    assert await redis.xlen(broker.keys.stream) == 1


async def test_a_failed_call_fails_every_request_of_the_group(settings: Settings) -> None:
    down = await connect(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    commit = GroupCommit(Broker(down, Keys(settings.prefix)), 60_000)
    outcomes = await asyncio.gather(*(commit.submit(items(2)) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, RedisUnavailable) for o in outcomes), outcomes
    assert all(
        isinstance(o, BaseException) and isinstance(o.__cause__, RedisConnectionError) for o in outcomes
    )
    await down.aclose()


async def test_groups_stay_under_their_size_limit(broker: Broker, redis: Redis) -> None:
    commit = GroupCommit(broker, 60_000, max_items=10)
    before = await evalsha_calls(redis)
    results = await asyncio.gather(*(commit.submit(items(4)) for _ in range(10)))
    assert sum(len(r) for r in results) == 40
    assert await redis.xlen(broker.keys.stream) == 40
    assert await evalsha_calls(redis) - before >= 5  # at most two requests (8 items) per call


async def test_nothing_to_submit(broker: Broker, redis: Redis) -> None:
    assert await GroupCommit(broker, 60_000).submit([]) == []


async def test_a_failed_partition_fails_only_the_requests_that_reach_it(redis: Redis, prefix: str) -> None:
    """With partitions, a group's call is one script per partition: one that fails (here
    a stream key holding a string: every script there is refused) fails the requests
    with an item in it, and no other request of the group."""
    layout = Layout(prefix, 12)
    broker = Broker(redis, layout)
    await broker.ensure_group()
    r: Any = redis
    await r.delete(layout.parts[3].stream)
    await r.set(layout.parts[3].stream, "not a stream")
    commit = GroupCommit(broker, 60_000)
    broken = [item_in(layout, 3, "a")]
    fine = [item_in(layout, 5, "b"), item_in(layout, 7, "c")]
    mixed = [item_in(layout, 5, "d"), item_in(layout, 3, "e")]
    outcomes = await asyncio.gather(
        *(commit.submit(x) for x in (broken, fine, mixed)), return_exceptions=True
    )

    assert isinstance(outcomes[0], BackendError), outcomes[0]
    assert isinstance(outcomes[2], BackendError), outcomes[2]  # part of it is queued: a retry with its keys
    accepted = outcomes[1]
    assert isinstance(accepted, list)
    assert [a.event_id for a in accepted] == [event_id for event_id, *_ in fine]
    assert await broker.locate(fine[0][0]) is not None
    assert await broker.locate(mixed[0][0]) is not None  # its partition ran
