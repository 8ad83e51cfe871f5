"""Workers on a deployment of several partitions: every partition drained, outcomes
settled in the partition of their event, nothing lost or doubled with two workers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, Layout
from eventstream.errors import PermanentError
from eventstream.event import Event
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.conservation import assert_conserved, audit_now, check_layout
from tests.support.factories import make_settings
from tests.support.workers import BURST_LIMIT_S

N = 6


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """On one server and on the session's Redis Cluster (overrides the suite's)."""
    return server_or_cluster


async def test_two_workers_drain_every_partition_exactly_once(
    redis: Redis, redis_url: str, prefix: str, tmp_path: Path, store: SqlStore
) -> None:
    settings = make_settings(
        redis_url, prefix, tmp_path, partitions=N, retry_delay=0.01, retry_max_delay=0.02, max_attempts=3
    )
    layout = Layout(prefix, N)
    broker = Broker(redis, layout)
    await broker.claim_partitions()
    runs: Counter[str] = Counter()
    rng = random.Random(7)
    flaky = {f"k-{i}" for i in range(600) if rng.random() < 0.2}

    app = EventStream("partitioned")

    @app.handler("OK")
    async def ok(event: Event) -> None:
        runs[event.id] += 1
        if event.idempotency_key in flaky and event.attempt == 1:
            raise RuntimeError("first try fails")

    @app.handler("BAD")
    async def bad(event: Event) -> None:
        runs[event.id] += 1
        raise PermanentError("never")

    now = now_ms()
    items = [
        to_envelope(IncomingEvent(type="BAD" if i % 25 == 0 else "OK", payload={"i": i}), f"k-{i}", now)
        for i in range(600)
    ]
    unkeyed = [to_envelope(IncomingEvent(type="OK", payload={"u": i}), None, now) for i in range(200)]
    accepted = []
    for chunk in range(0, 600, 50):  # batches of keyed events split over the partitions
        accepted += await enqueue(broker, items[chunk : chunk + 50], 60_000)
    for chunk in range(0, 200, 20):  # unkeyed calls go to the partitions in turn
        accepted += await enqueue(broker, unkeyed[chunk : chunk + 20], 60_000)
    # a repeat of the keyed ones: duplicates, wherever their partition is
    repeats = await enqueue(broker, items[:100], 60_000)
    assert all(a.duplicate for a in repeats)
    ids = [a.event_id for a in accepted]
    states = await check_layout(redis, layout)
    assert all(s.stream for s in states), "every partition got events"

    workers = [Worker(app, settings, Broker(redis, layout), store, consumer=f"w{n}") for n in range(2)]
    await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), BURST_LIMIT_S)

    places = await assert_conserved(redis, broker, store, ids)
    bad_ids = {a.event_id for a, item in zip(accepted, items, strict=False) if b'"BAD"' in item[1]}
    assert {i for i, p in places.items() if p == "dlq"} == bad_ids
    assert Counter(places.values()) == {"store": 800 - len(bad_ids), "dlq": len(bad_ids)}
    # each event ran once, a flaky one twice: no run doubled by the other worker
    for a, item in zip(accepted, [*items, *unkeyed], strict=True):
        key = item[2].key if item[2] is not None and not isinstance(item[2], str) else None
        expected = 1 if a.event_id in bad_ids else (2 if key in flaky else 1)
        assert runs[a.event_id] == expected, (a.event_id, key)
    assert sum(w.settled for w in workers) == sum(runs.values())
    states = await check_layout(redis, layout)
    assert all(s.stream == [] and s.retry == {} for s in states)
    report = await audit_now(broker, store)
    assert report.ok, report.problems
    assert report.processed == 800 - len(bad_ids)
    assert sum(p.processed for p in report.partitions) == report.processed
    assert all(p.processed for p in report.partitions), "every partition was worked"
