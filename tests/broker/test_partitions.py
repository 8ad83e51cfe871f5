"""A deployment of several partitions, on one server and on the session's Redis
Cluster (3 primaries): routing, reads that starve no partition, settling across
partitions, whole-deployment views, the partition count guarded. Every test checks
each partition's state afterwards (conservation.check_layout).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.broker import Broker, Completion, DeadLetter, Layout, ScheduledRetry, StreamEntry
from eventstream.broker.connection import connect
from eventstream.broker.keys import idem_digest
from eventstream.broker.scripts import Dedupe
from eventstream.errors import PartitionCountMismatch
from eventstream.ingest.accept import now_ms
from eventstream.ops import metrics
from tests.support.broker import Item, item_in, make_items
from tests.support.conservation import audit_now, check_layout
from tests.support.servers import start_private_redis

N = 4
WINDOW = 60_000


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """This module's tests run on one server and on a cluster (overrides the suite's)."""
    return server_or_cluster


@pytest.fixture
async def layout(prefix: str) -> Layout:
    return Layout(prefix, N)


@pytest.fixture
async def parted(redis: Redis, layout: Layout) -> Broker:
    b = Broker(redis, layout)
    await b.ensure_group()
    return b


def keyed(n: int, key: str = "k") -> list[Item]:
    """n events, each with its own idempotency key."""
    return [make_items(1, key=f"{key}-{i}", start=i)[0] for i in range(n)]


async def read_all(broker: Broker, consumer: str, n: int) -> list[StreamEntry]:
    """Read until ``n`` entries came (one read returns what each partition's share found)."""
    got: list[StreamEntry] = []
    for _ in range(20):
        got += await broker.read_new(consumer, n - len(got), 10)
        if len(got) == n:
            return got
    raise AssertionError(f"read {len(got)} of {n}")


def where(states: list[Any]) -> dict[str, int]:
    """event id -> the partition whose stream holds it."""
    return {f["id"]: p for p, s in enumerate(states) for _, f in s.stream}


async def test_keyed_events_go_to_their_keys_partition_and_stay_idempotent(
    parted: Broker, redis: Redis, layout: Layout
) -> None:
    items = keyed(40)
    results = await parted.enqueue(items, WINDOW)
    assert results == [(i[0], 0) for i in items]  # in order, all new
    states = await check_layout(redis, layout)
    placed = where(states)
    for event_id, _, dedupe in items:
        assert isinstance(dedupe, Dedupe)
        assert placed[event_id] == layout.partition_of(idem_digest(dedupe.key, None))
    assert len({placed[i[0]] for i in items}) == N  # 40 keys reach every partition

    # the same keys again, from another broker (another process): duplicates of the first ids
    again = [make_items(1, key=f"k-{i}", start=i)[0] for i in range(40)]
    other = Broker(redis, layout)
    assert await other.enqueue(again, WINDOW) == [(i[0], 1) for i in items]
    after = await check_layout(redis, layout)
    assert sum(len(s.stream) for s in after) == 40
    assert sum(s.counter("duplicates") for s in after) == 40


async def test_events_without_a_key_spread_evenly(parted: Broker, redis: Redis, layout: Layout) -> None:
    for _ in range(N * 5):
        await parted.enqueue(make_items(3), WINDOW)
    states = await check_layout(redis, layout)
    assert [len(s.stream) for s in states] == [15] * N  # a call's events together, calls in turn
    assert [s.counter("received") for s in states] == [15] * N


async def test_a_batch_is_split_by_partition_and_answered_in_order(
    parted: Broker, redis: Redis, layout: Layout
) -> None:
    first = keyed(12)
    await parted.enqueue(first, WINDOW)
    mixed = [*make_items(3), *keyed(12), *make_items(2, key="k-3"), *keyed(4, key="other")]
    results = await parted.enqueue(mixed, WINDOW)
    assert results[:3] == [(i[0], 0) for i in mixed[:3]]
    assert results[3:15] == [(i[0], 1) for i in first]  # duplicates name the first ids
    # "k-3" again with other content: a conflict (2), then... the same content (1)
    assert [r[1] for r in results[15:17]] == [2, 2]
    assert results[17:] == [(i[0], 0) for i in mixed[17:]]
    await check_layout(redis, layout)


async def test_reads_starve_no_partition(parted: Broker, redis: Redis, layout: Layout) -> None:
    # 600 events in one partition, one in each of the others: they come within two reads
    await parted.enqueue(make_items(600), WINDOW)  # one call: one partition
    states = await check_layout(redis, layout)
    [busy] = [p for p in range(N) if states[p].stream]
    lonely = [(p, await _into(parted, layout, p)) for p in range(N) if p != busy]
    seen: set[str] = set()
    for _ in range(2):
        seen |= {e.event_id for e in await parted.read_new("c1", 50, 10)}
    assert {i for _, i in lonely} <= seen
    # and once the others are empty the busy partition gets each read but for the few
    # entries still offered to each idle partition in turn
    for _ in range(3):
        got = await parted.read_new("c1", 50, 10)
        assert {e.partition for e in got} == {busy}
    assert len(got) >= 50 - (N - 1)
    await check_layout(redis, layout)


async def test_a_blocked_read_wakes_for_any_partition(parted: Broker, redis: Redis, layout: Layout) -> None:
    for target in range(N):
        reading = asyncio.create_task(parted.read_new("c1", 10, 1_000))
        await asyncio.sleep(0.05)
        item = await _into(parted, layout, target)
        got = await reading
        # the read returned the event rather than nothing after 1 s: it watched partition `target`
        assert [(e.event_id, e.partition) for e in got] == [(item, target)]
    # on a cluster, the reads of the other partitions are still open: they deliver nothing
    assert await parted.end_reads("c1") == []
    await check_layout(redis, layout)


async def _into(broker: Broker, layout: Layout, partition: int) -> str:
    """Enqueue one keyed event that routes to ``partition``; its id."""
    [item] = [item_in(layout, partition, f"route-{uuid.uuid4().hex[:8]}")]
    [(event_id, _)] = await broker.enqueue([item], WINDOW)
    return event_id


async def test_settle_across_partitions_in_one_call(parted: Broker, redis: Redis, layout: Layout) -> None:
    items = keyed(24)
    await parted.enqueue(items, WINDOW)
    got = await read_all(parted, "c1", 24)
    assert len({e.partition for e in got}) == N
    envelope = {i[0]: i[1] for i in items}
    now = now_ms()
    done = [Completion(g.entry, g.event_id, False, g.partition) for g in got[:8]]
    retries = [
        ScheduledRetry(g.entry, g.event_id, now + 60_000, 1, now, envelope[g.event_id], g.partition)
        for g in got[8:16]
    ]
    dead = [
        DeadLetter(
            g.entry, g.event_id, "A", envelope[g.event_id], 1, "boom", "tb", now, now, True, g.partition
        )
        for g in got[16:]
    ]
    flags = await parted.settle("c1", done, retries, dead, [("handler:count", 8)])
    assert flags == ([True] * 8, [True] * 8, [True] * 8)
    states = await check_layout(redis, layout)
    assert sum(s.counter("processed") for s in states) == 8
    assert sum(len(s.retry) for s in states) == 8
    assert sum(len(s.dlq) for s in states) == 8
    assert sum(s.hist.get("handler:count", 0) for s in states) == 8
    # each outcome landed in its own partition
    for g in got[8:16]:
        assert g.event_id in states[g.partition].retry
    for g in got[16:]:
        assert g.event_id in [f["id"] for _, f in states[g.partition].dlq]

    # the same entry id may exist in two partitions: a settle names the partition too
    wrong = [Completion(g.entry, g.event_id, False, (g.partition + 1) % N) for g in got[:1]]
    assert await parted.settle("c1", wrong) == ([False], [], [])


async def test_promote_renew_release_reclaim_leave_cover_every_partition(
    parted: Broker, redis: Redis, layout: Layout
) -> None:
    items = keyed(16)
    await parted.enqueue(items, WINDOW)
    got = await read_all(parted, "c1", 16)
    assert len({g.partition for g in got}) == N
    # renew beats the heart in every partition, and keeps every lease
    assert await parted.renew("c1", [g.ref for g in got], now_ms()) == []
    assert all(s.workers.get("c1") for s in await check_layout(redis, layout))
    # released entries are taken by the next reclaim, from every partition
    await parted.release("c1", [g.ref for g in got], 60_000)
    claimed, dead = await parted.reclaim("c2", 30_000, 100, 5, now_ms())
    assert sorted(c.ref for c in claimed) == sorted(g.ref for g in got)
    assert dead == []
    # c1 owns nothing now and leaves every partition; c2 is kept where it holds entries
    assert await parted.leave("c1") is True
    assert await parted.leave("c2") is False
    states = await check_layout(redis, layout)
    assert all("c1" not in s.workers for s in states)

    # retries due in any partition are promoted
    envelope = {i[0]: i[1] for i in items}
    retries = [
        ScheduledRetry(c.entry, c.event_id, 1, 1, 1, envelope[c.event_id], c.partition) for c in claimed
    ]
    assert (await parted.settle("c2", retries=retries))[1] == [True] * 16
    assert await parted.promote(now_ms(), 1000) == 16
    states = await check_layout(redis, layout)
    assert sum(len(s.stream) for s in states) == 16
    assert not await parted.is_idle()


async def test_locate_and_the_dlq_see_every_partition(parted: Broker, redis: Redis, layout: Layout) -> None:
    items = keyed(20)
    await parted.enqueue(items, WINDOW)
    got = await read_all(parted, "c1", 20)
    assert (await parted.locate(got[0].event_id)).status == "processing"  # type: ignore[union-attr]
    now = now_ms()
    envelope = {i[0]: i[1] for i in items}
    dead = [
        DeadLetter(
            g.entry,
            g.event_id,
            "T" if n % 2 else "U",
            envelope[g.event_id],
            1,
            "r",
            "",
            now,
            now,
            True,
            g.partition,
        )
        for n, g in enumerate(got)
    ]
    await parted.settle("c1", dead=dead)

    # pages newest first across partitions, by position: no gap, no repeat
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await parted.list_dead(cursor, 3)
        seen += [d.position for d in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 20
    keys = [_key(p) for p in seen]
    assert keys == sorted(keys, reverse=True)
    typed, _ = await parted.list_dead(None, 100, "T")
    assert len(typed) == 10

    # oldest first from any position: the same order reversed
    scanned: list[str] = []
    after = "-"
    while chunk := await parted.scan_dead(after, 7):
        scanned += [d.position for d in chunk]
        after = chunk[-1].position
    assert scanned == seen[::-1]

    for g in got:
        located = await parted.locate(g.event_id)
        assert located is not None
        assert located.status == "dead"
        assert located.dead is not None
        assert located.dead.partition == g.partition
        assert await parted.dead_entry_of(g.event_id) == located.dead
        assert await parted.dead_entry(located.dead.position) == located.dead

    # replay and delete by position, whatever the partition
    positions = {d.event_id: d.position for d in (await parted.list_dead(None, 100))[0]}
    replayed = await parted.replay_dead([positions[g.event_id] for g in got[:10]])
    assert sorted(replayed) == sorted(g.event_id for g in got[:10])
    deleted = await parted.delete_dead([(positions[g.event_id], g.event_id) for g in got[10:]])
    assert sorted(deleted) == sorted(g.event_id for g in got[10:])
    assert await parted.replay_dead(["1-0-99", "x"]) == []  # no such partition, no position
    states = await check_layout(redis, layout)
    assert sum(len(s.stream) for s in states) == 10
    assert sum(len(s.dlq) for s in states) == 0


def _key(position: str) -> tuple[int, ...]:
    return tuple(int(x) for x in (*position.split("-"), "0")[:3])


async def test_metrics_and_the_audit_sum_the_partitions(
    parted: Broker, redis: Redis, layout: Layout, store: Any
) -> None:
    await parted.enqueue(keyed(30), WINDOW)
    got = await read_all(parted, "c1", 10)
    await parted.heartbeat("c1", now_ms())
    snap = await metrics.snapshot(parted, now_ms(), 60_000)
    assert snap.counters["received"] == 30
    assert snap.gauges["queued"] == 20
    assert snap.gauges["pending"] == 10
    assert snap.gauges["workers"] == 1  # one worker, seen in every partition
    assert len(snap.partitions) == N
    assert sum(g["queued"] for g in snap.partitions) == 20
    text = metrics.render_prometheus(snap).decode()
    assert 'eventstream_partition_queued{partition="3"}' in text
    assert "eventstream_queued 20.0" in text

    report = await audit_now(parted, store)
    assert report.ok, report.problems
    assert report.received == 30
    states = await check_layout(redis, layout)
    assert [p.received for p in report.partitions] == [s.counter("received") for s in states]
    assert sum(p.pending for p in report.partitions) == 10
    assert report.to_json()["partitions"][0]["ok"] is True

    # one partition's books broken by hand: the audit names that partition
    victim = got[0]
    r: Any = redis
    await r.hincrby(layout.parts[victim.partition].counters, "received", 1)
    broken = await audit_now(parted, store)
    [problem] = [p for p in broken.problems if p.code == "conservation"]
    assert problem.detail.startswith(f"partition {victim.partition}: received")
    assert problem.count == 1


async def test_the_partition_count_is_recorded_and_guarded(redis: Redis, prefix: str) -> None:
    r: Any = redis
    four = Broker(redis, Layout(prefix, 4))
    await four.claim_partitions()
    assert await r.get(f"{{{prefix}}}:partitions") == "4"
    await Broker(redis, Layout(prefix, 4)).claim_partitions()  # the same count: fine

    # an empty deployment may change its count
    await Broker(redis, Layout(prefix, 8)).claim_partitions()
    assert await r.get(f"{{{prefix}}}:partitions") == "8"

    # one that holds events may not: it says why and what to do
    eight = Broker(redis, Layout(prefix, 8))
    await eight.enqueue(make_items(1), WINDOW)
    with pytest.raises(PartitionCountMismatch) as caught:
        await Broker(redis, Layout(prefix, 4)).claim_partitions()
    message = str(caught.value)
    assert "has 8 partition(s)" in message
    assert "EVENTSTREAM_PARTITIONS is 4" in message
    assert "set EVENTSTREAM_PARTITIONS=8" in message
    assert "holds 1 event(s)" in message
    assert await r.get(f"{{{prefix}}}:partitions") == "8"
    # nor does a process that skipped the check enqueue anything
    wrong = Broker(redis, Layout(prefix, 2))
    with pytest.raises(PartitionCountMismatch):
        await wrong.enqueue(make_items(1), WINDOW)
    with pytest.raises(PartitionCountMismatch):
        await wrong.ensure_group()


async def test_a_deployment_made_before_partitions_keeps_its_events(redis: Redis, prefix: str) -> None:
    r: Any = redis
    old = Broker(redis, Layout(prefix, 1))
    old._count_checked = True  # as an earlier version: it never recorded a count
    await old.enqueue(make_items(2), WINDOW)
    assert await r.get(f"{{{prefix}}}:partitions") is None
    with pytest.raises(PartitionCountMismatch, match="has 1 partition"):
        await Broker(redis, Layout(prefix, 3)).claim_partitions()
    await Broker(redis, Layout(prefix, 1)).claim_partitions()  # upgraded in place
    assert await r.get(f"{{{prefix}}}:partitions") == "1"


async def test_dedupe_records_live_in_their_partition(parted: Broker, redis: Redis, layout: Layout) -> None:
    [item] = make_items(1)
    dedupe = Dedupe("order-7", "key:0123456789ab", b"abcdefgh")
    await parted.enqueue([(item[0], item[1], dedupe)], WINDOW)
    states = await check_layout(redis, layout)
    [(p, record)] = [(p, k) for p, s in enumerate(states) for k in s.idem]
    assert record == layout.parts[p].dedupe("order-7", "key:0123456789ab")
    assert record.hash.startswith(layout.parts[p].tag)
    assert where(states)[item[0]] == p


async def test_an_idle_reader_only_blocks(tmp_path: Path, prefix: str) -> None:
    """While reads find nothing, each is one blocking XREADGROUP over every partition's
    stream (one server): no sweep of the partitions before it. A server of its own: the
    count of commands is the test's alone."""
    server = start_private_redis(tmp_path / "redis")
    client = await connect(server.url)
    try:
        broker = Broker(client, Layout(prefix, N))
        await broker.ensure_group()
        assert await broker.read_new("c1", 10, 5) == []  # a sweep, then a wait
        before = await _xreadgroup_calls(client)
        for _ in range(5):
            assert await broker.read_new("c1", 10, 5) == []
        assert await _xreadgroup_calls(client) - before == 5
        # and work that comes is found by the wait, then read by sweeps again
        [item] = make_items(1)
        await broker.enqueue([item], WINDOW)
        assert [e.event_id for e in await broker.read_new("c1", 10, 1_000)] == [item[0]]
    finally:
        await client.aclose()
        server.stop()


async def _xreadgroup_calls(client: Any) -> int:
    return int((await client.info("commandstats")).get("cmdstat_xreadgroup", {}).get("calls", 0))
