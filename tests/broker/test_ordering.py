"""Ordering keys in the scripts (order.lua): a key's events are released one at a time
(or K at a time) in acceptance order, the later ones parked in the key's line and let in
by the step that finishes the one before; other keys never wait. On one server and on
the session's Redis Cluster, on one partition and on several; every test checks the
whole state afterwards, ordering records included (conservation.assert_order).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.broker import (
    Broker,
    Completion,
    DeadLetter,
    Layout,
    ScheduledRetry,
    StreamEntry,
    key_limits,
    order_digest,
)
from eventstream.broker.scripts import Dedupe
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import now_ms, to_envelope
from tests.support.conservation import State, check_layout

WINDOW = 60_000
Item = tuple[str, bytes, Dedupe | None, str | None]


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """This module's tests run on one server and on a cluster (overrides the suite's)."""
    return server_or_cluster


@pytest.fixture(params=[1, 4], ids=["one-partition", "four-partitions"])
async def layout(request: pytest.FixtureRequest, prefix: str) -> Layout:
    return Layout(prefix, request.param)


@pytest.fixture
async def broker(redis: Redis, layout: Layout) -> Broker:
    b = Broker(redis, layout)
    await b.ensure_group()
    return b


def events(key: str | None, n: int, type_: str = "A", start: int = 0, idem: str | None = None) -> list[Item]:
    """n events with ordering key ``key`` (payload n: their place in the key's order)."""
    return [
        to_envelope(
            IncomingEvent(type=type_, payload={"n": start + i}, orderingKey=key),
            None if idem is None else f"{idem}-{start + i}",
            now_ms(),
        )
        for i in range(n)
    ]


def n_of(entry: StreamEntry) -> int:
    return int(json.loads(entry.envelope)["payload"]["n"])


def part_of(layout: Layout, key: str) -> int:
    return layout.partition_of(order_digest(key)) if layout.count > 1 else 0


async def read(broker: Broker, consumer: str = "c1", most: int = 100) -> list[StreamEntry]:
    """Everything readable now: sweeps that never block (a blocking read on a cluster
    stays open for the next call; one partition has no sweep: its read blocks 1 ms),
    until as many sweeps as there are partitions found nothing (a sweep may skip a
    partition that gave nothing before, never that many in a row)."""
    got: list[StreamEntry] = []
    empty = 0
    while empty < len(broker.partitions) + 1:
        more = await broker.read_new(consumer, most, 0 if len(broker.partitions) > 1 else 1)
        empty = 0 if more else empty + 1
        got += more
    return got


async def complete(
    broker: Broker, entries: list[StreamEntry], limits: str = "", consumer: str = "c1"
) -> None:
    done = [Completion(e.entry, e.event_id, False, e.partition, e.order) for e in entries]
    flags, _, _ = await broker.settle(consumer, done=done, limits=limits)
    assert all(flags)


async def state_of(redis: Redis, layout: Layout, key: str) -> State:
    states = await check_layout(redis, layout)
    return states[part_of(layout, key)]


async def test_one_key_is_released_one_at_a_time_in_acceptance_order(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    items = events("acct-1", 5)
    assert await broker.enqueue(items, WINDOW) == [(i[0], 0) for i in items]
    s = await state_of(redis, layout, "acct-1")
    digest = order_digest("acct-1")
    assert [f["id"] for _, f in s.stream] == [items[0][0]]
    assert s.stream[0][1]["k"] == digest
    assert s.lines == {digest: [i[0] for i in items[1:]]}
    assert s.order == {digest: 1}
    assert s.counter("parked") == 4
    assert s.counter("received") == 5
    assert (await broker.gauges(now_ms(), 10_000))["parked"] == 4

    order = []
    for _ in range(5):
        [entry] = await read(broker)
        assert not await read(broker)  # nothing else of the key is readable meanwhile
        order.append(n_of(entry))
        await complete(broker, [entry])
    assert order == [0, 1, 2, 3, 4]
    s = await state_of(redis, layout, "acct-1")
    assert (s.order, s.lines, s.parked, s.waiting) == ({}, {}, {}, {})  # nothing left of the key
    assert s.counter("released") == 4
    assert s.counter("processed") == 5


async def test_other_keys_and_unkeyed_events_never_wait_behind_a_busy_key(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    # keys busy at once, all in one batch, interleaved: each key's first is readable at once
    items = [e for i in range(3) for k in ("a", "b", "c") for e in events(k, 1, start=i)]
    items += events(None, 4)
    await broker.enqueue(items, WINDOW)
    got = await read(broker)
    assert sorted((e.order, n_of(e)) for e in got if e.order) == sorted(
        (order_digest(k), 0) for k in ("a", "b", "c")
    )
    assert len([e for e in got if not e.order]) == 4
    await check_layout(redis, layout)


async def test_a_retry_holds_its_key_and_only_its_key(broker: Broker, redis: Redis, layout: Layout) -> None:
    await broker.enqueue([*events("slow", 2), *events("fast", 2)], WINDOW)
    first = {n_of(e) if e.order == order_digest("slow") else 10 + n_of(e): e for e in await read(broker)}
    assert set(first) == {0, 10}
    slow = first[0]
    retry = ScheduledRetry(slow.entry, slow.event_id, now_ms() + 60_000, 1, now_ms(), slow.envelope.encode(),
                           slow.partition, slow.order)  # fmt: skip
    _, flags, _ = await broker.settle("c1", retries=[retry])
    assert flags == [True]
    await complete(broker, [first[10]])
    s = await state_of(redis, layout, "slow")
    assert s.status[slow.event_id].endswith(":" + order_digest("slow"))  # the retry keeps the key
    # the other key goes on; the failing one's next event stays parked
    [fast] = await read(broker)
    assert (fast.order, n_of(fast)) == (order_digest("fast"), 1)
    assert not await read(broker)

    # due: the same event comes back first, with its key, and then the next one
    _, flags, _ = await broker.settle("c1", retries=[retry._replace(due_ms=now_ms() - 1)])  # noop: not owned
    assert flags == [False]
    await redis.zadd(layout.parts[part_of(layout, "slow")].retry, {slow.event_id: 0})  # due now
    assert await broker.promote(now_ms()) == 1
    [again] = await read(broker)
    assert (again.event_id, again.order, again.attempts) == (slow.event_id, slow.order, 1)
    await complete(broker, [again, fast])
    [second] = await read(broker)
    assert (second.order, n_of(second)) == (order_digest("slow"), 1)
    await complete(broker, [second])
    s = await state_of(redis, layout, "slow")
    assert s.order == {}
    assert s.lines == {}


async def test_dead_letter_lets_the_next_in_and_a_replay_joins_the_back_of_the_line(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    items = events("k", 3)
    await broker.enqueue(items, WINDOW)
    [first] = await read(broker)
    dead = DeadLetter(first.entry, first.event_id, "A", first.envelope.encode(), 1, "PermanentError: no", "",
                      1, 2, True, first.partition, first.order)  # fmt: skip
    _, _, flags = await broker.settle("c1", dead=[dead])
    assert flags == [True]
    s = await state_of(redis, layout, "k")
    [(position, fields)] = s.dlq
    assert fields["k"] == order_digest("k")
    [second] = await read(broker)
    assert n_of(second) == 1

    # replayed while the key is busy: parked behind event 2 (still waiting)
    part = part_of(layout, "k")
    pos = position if part == 0 else f"{position}-{part}"
    assert await broker.replay_dead([pos]) == [first.event_id]
    s = await state_of(redis, layout, "k")
    assert s.lines == {order_digest("k"): [items[2][0], first.event_id]}
    assert s.counter("parked") == 3
    located = await broker.locate(first.event_id)
    assert located is not None
    assert located.status == "queued"
    assert located.parked_ms is not None

    order = [n_of(second)]
    await complete(broker, [second])
    for _ in range(2):
        [entry] = await read(broker)
        order.append(n_of(entry))
        await complete(broker, [entry])
    assert order == [1, 2, 0]
    await check_layout(redis, layout)


async def test_a_replay_of_an_idle_key_is_queued_at_once(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await broker.enqueue(events("k", 1), WINDOW)
    [first] = await read(broker)
    dead = DeadLetter(first.entry, first.event_id, "A", first.envelope.encode(), 1, "x", "", 1, 2, True,
                      first.partition, first.order)  # fmt: skip
    await broker.settle("c1", dead=[dead])
    [entry], _ = await broker.list_dead(None, 10)
    await broker.replay_dead([entry.position])
    [again] = await read(broker)
    assert (again.event_id, again.order) == (first.event_id, order_digest("k"))
    s = await state_of(redis, layout, "k")
    assert s.order == {order_digest("k"): 1}


async def test_a_reclaimed_event_keeps_its_key_and_runs_before_the_next(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await broker.enqueue(events("k", 3), WINDOW)
    [first] = await read(broker, "dead-worker")
    # the worker died: a live one takes the entry over after its lease (idle 0 here)
    claimed, lost = await broker.reclaim("live", 0, 10, 5, now_ms())
    assert [c.event_id for c in claimed] == [first.event_id]
    assert not lost
    assert claimed[0].order == order_digest("k")
    assert not await read(broker, "live")  # the next one still waits
    await complete(broker, claimed, consumer="live")
    [second] = await read(broker, "live")
    assert n_of(second) == 1
    await check_layout(redis, layout)


async def test_dead_lettering_by_reclaim_lets_the_next_in(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await broker.enqueue(events("k", 2), WINDOW)
    [first] = await read(broker, "w1")
    claimed, lost = await broker.reclaim("w2", 0, 10, 1, now_ms())  # delivered once: too often
    assert claimed == []
    assert [i for i, _, _ in lost] == [first.event_id]
    s = await state_of(redis, layout, "k")
    assert [f["k"] for _, f in s.dlq] == [order_digest("k")]
    [second] = await read(broker, "w2")
    assert n_of(second) == 1


async def test_key_concurrency_releases_up_to_k_in_order(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    limits = key_limits({"A": 3, "B": 1})
    await broker.enqueue(events("k", 8), WINDOW)
    [first] = await read(broker)  # ingest releases only when the key is idle
    await complete(broker, [first], limits)
    got = await read(broker)
    assert [n_of(e) for e in got] == [1, 2, 3]  # the key fills up to 3, in order
    s = await state_of(redis, layout, "k")
    assert s.order == {order_digest("k"): 3}
    await complete(broker, got[1:], limits)  # two finish: two more come
    more = await read(broker)
    assert [n_of(e) for e in more] == [4, 5]
    await complete(broker, [got[0], *more], limits)
    rest = await read(broker)
    assert [n_of(e) for e in rest] == [6, 7]
    await complete(broker, rest, limits)
    s = await state_of(redis, layout, "k")
    assert (s.order, s.lines) == ({}, {})


async def test_each_events_own_handler_limit_decides_its_release(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    # An event starts when fewer than its own handler's limit of its key's events are in
    # progress, never before an earlier one: B (limit 1) waits until nothing of the key
    # runs, the A events after it wait for B to start, then may run beside it (limit 3).
    limits = key_limits({"A": 3, "B": 1})
    items = [*events("k", 1, "A"), *events("k", 2, "A", 1), *events("k", 1, "B", 3), *events("k", 1, "A", 4)]
    await broker.enqueue(items, WINDOW)
    [first] = await read(broker)
    await complete(broker, [first], limits)
    two = await read(broker)
    assert [n_of(e) for e in two] == [1, 2]  # then B's limit of 1 stops the release
    await complete(broker, two[:1], limits)
    assert not await read(broker)  # one A still runs: B may not start
    await complete(broker, two[1:], limits)
    b_and_a = await read(broker)
    assert [n_of(e) for e in b_and_a] == [3, 4]
    await complete(broker, b_and_a, limits)
    s = await state_of(redis, layout, "k")
    assert (s.order, s.lines) == ({}, {})


async def test_the_wildcard_limit_covers_types_without_their_own(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    assert key_limits({"A": 1, "*": 1}) == ""
    limits = key_limits({"*": 2})
    await broker.enqueue(events("k", 4, "Z"), WINDOW)
    [first] = await read(broker)
    await complete(broker, [first], limits)
    assert [n_of(e) for e in await read(broker)] == [1, 2]


async def test_an_event_with_both_keys_is_deduplicated_in_its_ordering_keys_partition(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    items = events("acct", 3, idem="pay")
    assert [r[1] for r in await broker.enqueue(items, WINDOW)] == [0, 0, 0]
    again = events("acct", 3, idem="pay")
    assert await broker.enqueue(again, WINDOW) == [(i[0], 1) for i in items]
    states = await check_layout(redis, layout)
    home = part_of(layout, "acct")
    assert len(states[home].idem) == 3  # the records live with the key's events
    assert sum(len(s.idem) for s in states) == 3
    assert states[home].counter("duplicates") == 3
    assert len(states[home].lines[order_digest("acct")]) == 2


async def test_parked_events_count_in_the_gauges_and_the_oldest_wait(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await broker.enqueue([*events("a", 3), *events("b", 2), *events("c", 1)], WINDOW)
    gauges = await broker.gauges(now_ms() + 5_000, 10_000)
    assert (gauges["parked"], gauges["busy_keys"]) == (3, 3)
    assert 5_000 <= gauges["oldest_parked_ms"] < 60_000
    assert await broker.backlog(False) == (6, {})
    assert not await broker.is_idle()
    await check_layout(redis, layout)


async def test_a_completion_of_another_consumers_entry_releases_nothing(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    await broker.enqueue(events("k", 2), WINDOW)
    [first] = await read(broker, "owner")
    flags, _, _ = await broker.settle(
        "intruder", done=[Completion(first.entry, first.event_id, False, first.partition, first.order)]
    )
    assert flags == [False]
    s = await state_of(redis, layout, "k")
    assert s.order == {order_digest("k"): 1}
    assert len(s.lines[order_digest("k")]) == 1


async def test_many_keys_in_one_batch_keep_each_keys_order(
    broker: Broker, redis: Redis, layout: Layout
) -> None:
    keys = [f"key-{i}" for i in range(20)]
    items = [e for n in range(10) for k in keys for e in events(k, 1, start=n)]
    await broker.enqueue(items, WINDOW)
    seen: dict[str, list[int]] = {}
    digests = {order_digest(k): k for k in keys}
    while True:
        got = await read(broker)
        if not got:
            break
        for e in got:
            seen.setdefault(digests[e.order], []).append(n_of(e))
        await complete(broker, got)
    assert seen == {k: list(range(10)) for k in keys}
    states = await check_layout(redis, layout)
    assert sum(s.counter("processed") for s in states) == 200
