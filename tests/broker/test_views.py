"""The dashboard's bounded reads (views.py) over four partitions, on one server and on
the session's Redis Cluster: retries soonest first paged without gap or repeat, workers
merged over the partitions, the oldest queued event's wait, the nodes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventstream.broker import Broker, Layout, ScheduledRetry, StreamEntry
from eventstream.broker.views import RetryCursor
from eventstream.ingest.accept import now_ms
from tests.support.broker import make_items
from tests.support.conservation import check_layout

N = 4


@pytest.fixture
async def parted(server_or_cluster: Any, prefix: str) -> Broker:
    """A broker of four partitions, on one server and on a cluster."""
    b = Broker(server_or_cluster, Layout(prefix, N))
    await b.ensure_group()
    return b


async def deliver_all(broker: Broker, n: int) -> list[StreamEntry]:
    items = [make_items(1, key=f"k-{i}", start=i)[0] for i in range(n)]
    await broker.enqueue(items, 60_000)
    got: list[StreamEntry] = []
    for _ in range(50):
        got += await broker.read_new("c1", n - len(got), 10)
        if len(got) == n:
            return got
    raise AssertionError(f"read {len(got)} of {n}")


async def test_retries_come_soonest_first_in_pages_without_gap_or_repeat(
    parted: Broker, server_or_cluster: Any
) -> None:
    got = await deliver_all(parted, 20)
    assert len({g.partition for g in got}) > 1
    base = now_ms() + 60_000
    # three events per due time: ties within a partition and across partitions
    retries = [
        ScheduledRetry(
            g.entry,
            g.event_id,
            base + (n // 3) * 1000,
            n % 4 + 1,
            base - 5000,
            g.envelope.encode(),
            g.partition,
            "",
            f"ValueError: failure {n}\nline two",
        )
        for n, g in enumerate(got)
    ]
    _, flags, _ = await parted.settle("c1", retries=retries)
    assert all(flags)
    await check_layout(server_or_cluster, parted.layout)

    seen = []
    after: RetryCursor | None = None
    while page := await parted.views.retries(after, 3):
        assert len(page) <= 3
        seen += page
        after = page[-1].cursor
    assert len(seen) == 20
    assert [r.cursor for r in seen] == sorted(r.cursor for r in seen)
    assert {r.event_id for r in seen} == {g.event_id for g in got}
    wanted = {r.event_id: r for r in retries}
    for r in seen:
        w = wanted[r.event_id]
        assert (r.due_ms, r.partition, r.attempts, r.first_failure_ms) == (
            w.due_ms, w.partition, w.attempts, w.first_failure_ms,
        )  # fmt: skip
        assert r.envelope == w.envelope.decode()
        assert r.error == w.reason


async def test_retries_all_due_at_one_ms_page_one_by_one_without_gap(parted: Broker) -> None:
    """More retries of one partition due at the cursor's ms than a page reads at once:
    the cursor's partition is read on past the ones it already showed."""
    got = await deliver_all(parted, 20)
    due = now_ms() + 60_000
    retries = [
        ScheduledRetry(g.entry, g.event_id, due, 1, due - 5000, g.envelope.encode(), g.partition, "", "E: x")
        for g in got
    ]
    _, flags, _ = await parted.settle("c1", retries=retries)
    assert all(flags)
    assert max(sum(g.partition == p for g in got) for p in range(N)) > 2  # ties beyond 2 x count
    seen = []
    after: RetryCursor | None = None
    while page := await parted.views.retries(after, 1):
        seen += page
        after = page[-1].cursor
    assert [r.cursor for r in seen] == sorted((due, g.partition, g.event_id) for g in got)


async def test_workers_merge_their_beats_and_count_what_they_hold(parted: Broker) -> None:
    got = await deliver_all(parted, 6)  # pending for c1, spread over the partitions
    now = now_ms()
    await parted.heartbeat("c1", now - 500)
    await parted.heartbeat("c1", now)  # the latest beat counts
    await parted.heartbeat("old", now - 3_600_000)
    await parted.report_overdue("c1", '{"count": 2}')

    beats, total = await parted.views.workers(10)

    assert total == 2
    assert [(b.consumer, b.last_beat_ms, b.in_flight, b.overdue) for b in beats] == [
        ("c1", now, len(got), '{"count": 2}'),
        ("old", now - 3_600_000, 0, None),
    ]
    only, _ = await parted.views.workers(1)
    assert [b.consumer for b in only] == ["c1"]


async def test_the_oldest_queued_event_is_the_first_one_not_delivered(parted: Broker) -> None:
    assert await parted.views.oldest_queued_ms(now_ms()) == 0
    await parted.enqueue(make_items(1, key="first"), 60_000)
    await asyncio.sleep(0.3)
    await parted.enqueue(make_items(1, key="second"), 60_000)
    waited = await parted.views.oldest_queued_ms(now_ms())
    assert 300 <= waited < 5_000
    got: list[StreamEntry] = []
    for _ in range(50):
        got += await parted.read_new("c1", 2, 10)
        if len(got) == 2:
            break
    assert await parted.views.oldest_queued_ms(now_ms()) == 0  # both delivered: none waits


async def test_each_partition_names_its_node_on_a_cluster(parted: Broker) -> None:
    nodes = parted.views.nodes()
    assert len(nodes) == N
    if parted.layout.count and isinstance(nodes[0], str):
        assert all(n and ":" in n for n in nodes)
        assert len(set(nodes)) > 1  # the partitions spread over the primaries
    else:
        assert nodes == [None] * N
