"""Follow-ups (Event.emit) in the scripts: recorded by the step that completes their
parent and only then (complete.lua), staged before the parent's store row (emits.py),
and relayed through the outbox when their ordering key names another partition. On one
server and on the session's Redis Cluster, one partition and four; every test checks
the whole state afterwards (conservation.check_layout)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.broker import Broker, Completion, DeadLetter, Layout, StreamEntry, order_digest
from eventstream.broker.keys import EMIT_NAMESPACE, idem_digest
from eventstream.event import Event, decode_envelope
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import now_ms, to_envelope
from eventstream.worker.follow_ups import stage, unstage
from tests.support.conservation import State, check_layout

WINDOW = 60_000


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """On one server and on a cluster (overrides the suite's)."""
    return server_or_cluster


@pytest.fixture(params=[1, 4], ids=["one-partition", "four-partitions"])
async def layout(request: pytest.FixtureRequest, prefix: str) -> Layout:
    return Layout(prefix, request.param)


@pytest.fixture
async def broker(redis: Redis, layout: Layout) -> Broker:
    b = Broker(redis, layout)
    await b.ensure_group()
    return b


def part_of(layout: Layout, key: str) -> int:
    return layout.partition_of(order_digest(key)) if layout.count > 1 else 0


def key_not_in(layout: Layout, partition: int) -> str:
    """An ordering key whose partition is not ``partition`` (layout.count > 1)."""
    return next(f"k{i}" for i in range(1000) if part_of(layout, f"k{i}") != partition)


async def post(broker: Broker, key: str | None = None, n: int = 0) -> str:
    item = to_envelope(IncomingEvent(type="P", payload={"n": n}, orderingKey=key), None, now_ms())
    [(event_id, _)] = await broker.enqueue([item], WINDOW)
    return event_id


async def read(broker: Broker, consumer: str = "c1") -> list[StreamEntry]:
    """Everything readable now (see test_ordering.read)."""
    got: list[StreamEntry] = []
    empty = 0
    while empty < len(broker.partitions) + 1:
        more = await broker.read_new(consumer, 100, 0 if len(broker.partitions) > 1 else 1)
        empty = 0 if more else empty + 1
        got += more
    return got


def parent_of(entry: StreamEntry) -> Event:
    return Event.from_envelope(decode_envelope(entry.envelope), entry.attempts + 1)


def completion(entry: StreamEntry, event: Event | None = None, skipped: bool = False) -> Completion:
    ups = [(f.id, f.envelope, f.ordering_key) for f in (event.follow_ups if event else ())]
    return Completion(entry.entry, entry.event_id, skipped, entry.partition, entry.order, ups)


async def complete(broker: Broker, done: list[Completion], consumer: str = "c1") -> list[bool]:
    flags, _, _ = await broker.settle(consumer, done=done)
    return flags


def merged(states: list[State]) -> dict[str, Any]:
    """Counters summed over the partitions, and where every live event is."""
    counters: dict[str, int] = {}
    where: dict[str, int] = {}
    for i, s in enumerate(states):
        for name, value in s.counters.items():
            counters[name] = counters.get(name, 0) + value
        for event_id in s.status:
            where[event_id] = i
    return {"counters": counters, "where": where}


async def test_follow_ups_are_enqueued_by_their_parents_completion(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    parent_id = await post(broker)
    [entry] = await read(broker)
    event = parent_of(entry)
    ids = [event.emit("CHILD", {"i": i}) for i in range(3)]
    assert not await read(broker)  # recorded in the Event only, until the completion

    assert await complete(broker, [completion(entry, event)]) == [True]

    states = await check_layout(redis, layout)
    seen = merged(states)
    assert seen["counters"]["emitted"] == 3
    assert seen["counters"]["received"] == 4
    assert seen["counters"]["processed"] == 1
    # an unkeyed follow-up goes to its parent's partition: one step, no relay
    assert {seen["where"][i] for i in ids} == {entry.partition}
    children = await read(broker)
    assert sorted(c.event_id for c in children) == sorted(ids)
    for child in children:
        env = decode_envelope(child.envelope)
        assert env.causationId == parent_id
        assert env.type == "CHILD"
        assert child.attempts == 0


async def test_a_rejected_completion_records_no_follow_ups(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await post(broker)
    [entry] = await read(broker)
    event = parent_of(entry)
    event.emit("CHILD", {})
    before = await check_layout(redis, layout)

    assert await complete(broker, [completion(entry, event)], consumer="someone-else") == [False]

    after = await check_layout(redis, layout)
    assert [s.status for s in after] == [s.status for s in before]
    assert "emitted" not in merged(after)["counters"]
    assert not await read(broker, "c2")


async def test_only_the_completed_parents_follow_ups_are_recorded(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    for n in range(2):
        await post(broker, n=n)
    first, second = await read(broker)
    events = [parent_of(first), parent_of(second)]
    kept = events[0].emit("CHILD", {"of": 0})
    events[1].emit("CHILD", {"of": 1})
    await redis.xack(layout.parts[second.partition].stream, "workers", second.entry)  # no longer owned

    flags = await complete(broker, [completion(first, events[0]), completion(second, events[1])])

    assert flags == [True, False]
    seen = merged(await check_layout(redis, layout))
    assert seen["counters"]["emitted"] == 1
    assert kept in seen["where"]


async def test_a_keyed_follow_up_waits_behind_its_keys_earlier_events(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await post(broker, "acct", 0)
    waiting = await post(broker, "acct", 1)  # parked behind the parent
    [entry] = await read(broker)
    event = parent_of(entry)
    child = event.emit("CHILD", {}, ordering_key="acct")

    await complete(broker, [completion(entry, event)])

    s = (await check_layout(redis, layout))[part_of(layout, "acct")]
    assert s.lines == {order_digest("acct"): [child]}  # behind the event accepted before it
    [second] = await read(broker)
    assert second.event_id == waiting
    await complete(broker, [completion(second)])
    [third] = await read(broker)
    assert third.event_id == child
    await complete(broker, [completion(third)])
    s = (await check_layout(redis, layout))[part_of(layout, "acct")]
    assert (s.order, s.lines) == ({}, {})


async def test_a_follow_up_of_another_partition_goes_through_the_outbox(redis: Redis, prefix: str) -> None:
    layout = Layout(prefix, 4)  # four partitions here: one has no other
    broker = Broker(redis, layout)
    await broker.ensure_group()
    await post(broker)
    [entry] = await read(broker)
    key = key_not_in(layout, entry.partition)
    event = parent_of(entry)
    child = event.emit("CHILD", {"x": 1}, ordering_key=key)

    await complete(broker, [completion(entry, event)])

    states = await check_layout(redis, layout)
    assert list(states[entry.partition].outbox) == [child]
    seen = merged(states)
    assert child not in seen["where"]  # recorded, not yet received anywhere
    assert (seen["counters"]["emitted"], seen["counters"]["received"]) == (1, 1)
    assert (await broker.gauges(now_ms(), 10_000))["outbox"] == 1

    assert await broker.relay(WINDOW) == 1

    states = await check_layout(redis, layout)
    assert all(s.outbox == {} for s in states)
    seen = merged(states)
    assert seen["where"][child] == part_of(layout, key)
    assert seen["counters"]["received"] == 2
    record = layout.parts[part_of(layout, key)].dedupe_of(idem_digest(child, EMIT_NAMESPACE))
    assert states[part_of(layout, key)].idem[record] == child

    # a relay cut short between the enqueue and the delete runs again: a duplicate
    await redis.hset(layout.parts[entry.partition].outbox, child, decode_envelope_bytes(states, child))
    assert await broker.relay(WINDOW) == 1
    states = await check_layout(redis, layout)
    assert all(s.outbox == {} for s in states)
    seen = merged(states)
    assert seen["counters"]["received"] == 2
    assert seen["counters"]["duplicates"] == 1
    [got] = await read(broker)
    assert got.event_id == child
    assert decode_envelope(got.envelope).orderingKey == key


def decode_envelope_bytes(states: list[State], event_id: str) -> str:
    """The envelope of a live event, from its stream entry."""
    for s in states:
        for _, fields in s.stream:
            if fields["id"] == event_id:
                return fields["e"]
    raise AssertionError(f"{event_id} is not in any stream")


async def staged_parent(broker: Broker) -> StreamEntry:
    """A delivered parent whose handler emitted one follow-up, staged (its worker then died)."""
    await post(broker)
    [entry] = await read(broker)
    event = parent_of(entry)
    event.emit("CHILD", {})
    await broker.stage_follow_ups([(entry.partition, entry.event_id, stage(event.follow_ups))])
    return entry


async def test_staged_follow_ups_are_read_back_and_dropped_by_the_completion(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await post(broker)
    [entry] = await read(broker)
    event = parent_of(entry)
    event.emit("CHILD", {"a": 1})
    event.emit("CHILD", {"a": 2}, ordering_key="z")

    await broker.stage_follow_ups([(entry.partition, entry.event_id, stage(event.follow_ups))])

    staged = await broker.staged_follow_ups([(entry.partition, entry.event_id), (entry.partition, "nope")])
    assert list(staged) == [entry.event_id]
    assert unstage(staged[entry.event_id]) == event.follow_ups
    # a redelivery that found the store row completes with what was staged
    await complete(broker, [completion(entry, event, skipped=True)])
    states = await check_layout(redis, layout)
    assert all(s.emits == {} for s in states)
    assert merged(states)["counters"]["emitted"] == 2


async def test_a_dead_parent_drops_its_staged_follow_ups(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    entry = await staged_parent(broker)
    dead = DeadLetter(entry.entry, entry.event_id, "P", entry.envelope.encode(), 1, "PermanentError: no", "",
                      1, 2, True, entry.partition, entry.order)  # fmt: skip

    _, _, flags = await broker.settle("c1", dead=[dead])

    assert flags == [True]
    states = await check_layout(redis, layout)
    assert all(s.emits == {} for s in states)
    assert "emitted" not in merged(states)["counters"]


async def test_reclaim_dead_letters_and_drops_staged_follow_ups(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    entry = await staged_parent(broker)

    claimed, dead = await broker.reclaim("c2", 0, 10, 1, now_ms())  # delivered once: the most allowed

    assert claimed == []
    assert [d[0] for d in dead] == [entry.event_id]
    states = await check_layout(redis, layout)
    assert all(s.emits == {} for s in states)


async def test_follow_up_ids_are_derived_from_the_parent_and_the_position() -> None:
    received = datetime.now(UTC)
    a = Event("0190f4a2-0000-7000-8000-000000000001", "P", {}, 1, received)
    b = Event("0190f4a2-0000-7000-8000-000000000001", "P", {}, 2, received)  # the same event, tried again
    other = Event("0190f4a2-0000-7000-8000-000000000002", "P", {}, 1, received)
    ids = [a.emit("C", {"n": i}) for i in range(3)]
    assert [b.emit("C", {"changed": True}) for _ in range(3)] == ids
    assert len(set(ids)) == 3
    assert other.emit("C", {}) not in ids
    for i in ids:
        assert len(i) == 36
        assert i[:13] == a.id[:13]  # the parent's time: sorts beside it
        assert i[14] == "7"
    assert json.loads(a.follow_ups[0].envelope)["causationId"] == a.id
