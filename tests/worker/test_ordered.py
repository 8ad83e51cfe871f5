"""Workers on events with ordering keys: each key's events run one at a time (or up to
the handler's key_concurrency) in acceptance order, across two workers, through
retries and dead letters, while other keys and unkeyed events go on; on one server and
on the session's Redis Cluster, with several partitions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
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

N = 4


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """On one server and on the session's Redis Cluster (overrides the suite's)."""
    return server_or_cluster


class Runs:
    """What the handlers saw: per key, each run's (n, start, end), and the most of one
    key's runs in progress at once."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[tuple[int, float, float]]] = {}
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.first_ok: dict[str, list[int]] = {}

    async def run(self, event: Event, fail: bool, delay: float, until: asyncio.Event | None = None) -> None:
        key = event.ordering_key or ""
        self.running[key] = self.running.get(key, 0) + 1
        self.most[key] = max(self.most.get(key, 0), self.running[key])
        start = time.monotonic()
        try:
            await asyncio.sleep(delay)
            if until is not None:
                if self.running[key] >= 3:
                    until.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), 2)
            if fail:
                raise RuntimeError("this try fails")
            self.first_ok.setdefault(key, []).append(event.payload["n"])
        finally:
            self.running[key] -= 1
            self.by_key.setdefault(key, []).append((event.payload["n"], start, time.monotonic()))


async def test_two_workers_keep_each_keys_order_through_retries_and_dead_letters(
    redis: Redis, redis_url: str, prefix: str, tmp_path: Path, store: SqlStore
) -> None:
    settings = make_settings(
        redis_url, prefix, tmp_path, partitions=N, retry_delay=0.01, retry_max_delay=0.02, max_attempts=3,
        concurrency=32,
    )  # fmt: skip
    layout = Layout(prefix, N)
    broker = Broker(redis, layout)
    await broker.claim_partitions()
    rng = random.Random(14)
    runs = Runs()
    app = EventStream("ordered")

    @app.handler("OK")
    async def ok(event: Event) -> None:
        await runs.run(event, fail=rng.random() < 0.2 and event.attempt < 3, delay=rng.random() / 500)

    @app.handler("BAD")
    async def bad(event: Event) -> None:
        try:
            await runs.run(event, fail=True, delay=0)
        except RuntimeError:
            raise PermanentError("never") from None

    three = asyncio.Event()  # set once 3 of the key ran at once: later runs need not wait

    @app.handler("WIDE", key_concurrency=3)
    async def wide(event: Event) -> None:
        # each run waits (a while) for a third to run beside it, whatever the load
        await runs.run(event, fail=False, delay=0.01, until=three)

    keys = [f"acct-{i}" for i in range(30)]
    items = []
    for n in range(20):  # interleaved: every key's n-th event in one batch
        for key in keys:
            kind = "BAD" if (n, key) in {(5, "acct-3"), (9, "acct-3"), (0, "acct-7")} else "OK"
            items.append(
                to_envelope(IncomingEvent(type=kind, payload={"n": n}, orderingKey=key), None, now_ms())
            )
    wide_items = [
        to_envelope(IncomingEvent(type="WIDE", payload={"n": n}, orderingKey="tenant"), None, now_ms())
        for n in range(12)
    ]
    plain = [to_envelope(IncomingEvent(type="OK", payload={"n": n}), None, now_ms()) for n in range(100)]
    accepted = []
    for chunk in range(0, len(items), 60):
        accepted += await enqueue(broker, items[chunk : chunk + 60], 60_000)
    accepted += await enqueue(broker, wide_items, 60_000)
    accepted += await enqueue(broker, plain, 60_000)
    await check_layout(redis, layout)

    workers = [Worker(app, settings, Broker(redis, layout), store, consumer=f"w{n}") for n in range(2)]
    await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), BURST_LIMIT_S)

    for key in keys:
        dead = {5, 9} if key == "acct-3" else {0} if key == "acct-7" else set()
        assert runs.first_ok[key] == [n for n in range(20) if n not in dead], key
        spans = sorted((start, end) for _, start, end in runs.by_key[key])
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), f"{key} overlapped"
        assert runs.most[key] == 1
        # the runs in time order are the key's events in order, each retried in place
        ns = [n for n, _, _ in sorted(runs.by_key[key], key=lambda r: r[1])]
        assert ns == sorted(ns), key
    assert runs.first_ok["tenant"] != []
    assert runs.most["tenant"] == 3
    assert sorted(runs.first_ok[""]) == list(range(100))

    places = await assert_conserved(redis, broker, store, [a.event_id for a in accepted])
    assert sum(p == "dlq" for p in places.values()) == 3
    states = await check_layout(redis, layout)
    assert all(s.order == {} and s.lines == {} for s in states)
    report = await audit_now(broker, store)
    assert report.ok, report.problems
