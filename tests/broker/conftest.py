"""Helpers for the broker tests: a whole-state snapshot and the conservation check.

``state(redis, keys)`` reads every key the scripts touch. ``check(redis, keys)``
snapshots and asserts that every accepted event is accounted for exactly once:

    XLEN dlq == dead_lettered - replayed - deleted
    received == processed + deleted + XLEN dlq + XLEN stream + ZCARD retry
             == processed + dead_lettered - replayed + XLEN stream + ZCARD retry

(a deleted event was received and dead-lettered, then left for good: it is counted
once, as deleted; XLEN stream is queued + pending), and that the status hash, the
retry body hash, the PEL and the DLQ agree with where each event is.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventstream.broker import GROUP, Broker, Completion, DeadLetter, Keys, ScheduledRetry
from eventstream.broker.scripts import Dedupe
from eventstream.ingest.accept import IncomingEvent, now_ms, to_envelope
from eventstream.settings import Settings

Item = tuple[str, bytes, Dedupe | str | None]


@dataclass(frozen=True)
class Pending:
    entry: str
    consumer: str
    deliveries: int


@dataclass(frozen=True)
class State:
    """Everything EventStream keeps in Redis for one prefix (idle times excluded)."""

    stream: list[tuple[str, dict[str, str]]]
    pending: list[Pending]
    status: dict[str, str]
    retry: dict[str, int]
    retry_body: dict[str, str]
    dlq: list[tuple[str, dict[str, str]]]
    counters: dict[str, int]
    hist: dict[str, int]
    workers: dict[str, int]
    idem: dict[str, str] = field(default_factory=dict)  # dedupe record -> its event id
    stray: list[str] = field(default_factory=list)  # keys of the prefix not in keys.py's layout

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def without_counters(self) -> State:
        return replace(self, counters={})

    def stream_ids(self) -> list[str]:
        return [f["id"] for _, f in self.stream]

    def dlq_ids(self) -> list[str]:
        return [f["id"] for _, f in self.dlq]


async def state(redis: Redis, keys: Keys) -> State:
    r: Any = redis
    stream = [(e, dict(f)) for e, f in await r.xrange(keys.stream)]
    try:
        raw_pending = await r.xpending_range(keys.stream, GROUP, "-", "+", 100_000)
    except ResponseError as exc:  # no stream or no group yet
        if "NOGROUP" not in str(exc):
            raise
        raw_pending = []
    pending = [Pending(p["message_id"], p["consumer"], int(p["times_delivered"])) for p in raw_pending]
    retry = {m: int(s) for m, s in await r.zrange(keys.retry, 0, -1, withscores=True)}
    dlq = [(e, dict(f)) for e, f in await r.xrange(keys.dlq)]
    idem, stray = {}, []
    known = set(keys.all_static())
    async for k in r.scan_iter(match=f"{keys.tag}*", count=1000):
        if k.startswith(f"{keys.tag}:idem:"):
            idem[k] = (await r.get(k))[:36]  # the event id; a content fingerprint may follow
        elif k not in known:
            stray.append(k)
    return State(
        stream=stream,
        pending=pending,
        status=await r.hgetall(keys.status),
        retry=retry,
        retry_body=await r.hgetall(keys.retry_body),
        dlq=dlq,
        counters={k: int(v) for k, v in (await r.hgetall(keys.counters)).items()},
        hist={k: int(v) for k, v in (await r.hgetall(keys.hist)).items()},
        workers={m: int(s) for m, s in await r.zrange(keys.workers, 0, -1, withscores=True)},
        idem=idem,
        stray=sorted(stray),
    )


_RETRY_STATUS = re.compile(r"^r:\d+:\d*$")


def assert_conserved(s: State) -> None:
    """Nothing lost, nothing duplicated, nothing left behind."""
    assert s.stray == [], f"keys outside the layout: {s.stray}"

    # every accepted event ended processed or deleted, or is still in the DLQ, stream or retry set
    in_dlq = s.counter("dead_lettered") - s.counter("replayed") - s.counter("deleted")
    assert len(s.dlq) == in_dlq, f"DLQ holds {len(s.dlq)}, counters say {in_dlq}: {s.counters}"
    settled = s.counter("processed") + s.counter("deleted")
    assert s.counter("received") == settled + in_dlq + len(s.stream) + len(s.retry), (
        f"conservation broken: counters {s.counters}, stream {len(s.stream)}, retry {len(s.retry)}"
    )

    # every live event is in exactly one place and its status says which
    expected: dict[str, str] = {}
    for entry, f in s.stream:
        assert f["id"] not in expected, f"event {f['id']} twice"
        # fresh events carry no attempt fields; a retry back from the retry set does
        assert set(f) in ({"id", "e"}, {"id", "a", "f", "e"}), f
        expected[f["id"]] = f"q:{entry}"
    for event_id in s.retry:
        assert event_id not in expected, f"event {event_id} twice"
        expected[event_id] = "r"
    for entry, f in s.dlq:
        assert f["id"] not in expected, f"event {f['id']} twice"
        expected[f["id"]] = f"d:{entry}"
    assert set(s.status) == set(expected), f"status {s.status} vs live {expected}"
    for event_id, where in expected.items():
        if where == "r":
            assert _RETRY_STATUS.match(s.status[event_id]), s.status[event_id]
        else:
            assert s.status[event_id] == where
    assert set(s.retry_body) == set(s.retry), "retry body and retry set disagree"

    # the PEL only names entries that are still in the stream
    entries = {e for e, _ in s.stream}
    for p in s.pending:
        assert p.entry in entries, f"PEL names {p.entry}, which is not in the stream"


async def check(redis: Redis, keys: Keys) -> State:
    """Snapshot and assert conservation."""
    s = await state(redis, keys)
    assert_conserved(s)
    return s


# ---- building blocks ------------------------------------------------------------------


def make_items(n: int, type_: str = "A", key: str | None = None, start: int = 0) -> list[Item]:
    """n distinct events (envelopes as ingest builds them); ``key`` is the idempotency key."""
    return [to_envelope(IncomingEvent(type=type_, payload={"n": start + i}), key, now_ms()) for i in range(n)]


async def ingest(broker: Broker, n: int, type_: str = "A") -> list[Item]:
    items = make_items(n, type_)
    results = await broker.enqueue(items, 60_000)
    assert results == [(item[0], False) for item in items]
    return items


async def settle_done(
    broker: Broker, consumer: str, done: list[Any], hist: list[tuple[str, int]] | None = None
) -> list[bool]:
    """complete.lua through Broker.settle: done is (entry, event id, skipped)."""
    flags, _, _ = await broker.settle(consumer, done=[Completion(*d) for d in done], hist=hist or ())
    return flags


async def settle_retries(broker: Broker, consumer: str, retries: list[Any]) -> list[bool]:
    """schedule_retry.lua through Broker.settle: (entry, event id, due ms, attempts, first ms, envelope)."""
    _, flags, _ = await broker.settle(consumer, retries=[ScheduledRetry(*r) for r in retries])
    return flags


async def settle_dead(broker: Broker, consumer: str, dead: list[Any]) -> list[bool]:
    """dead_letter.lua through Broker.settle: (entry, id, type, envelope, attempts, reason,
    traceback, first ms, last ms, handler ran)."""
    _, _, flags = await broker.settle(consumer, dead=[DeadLetter(*d) for d in dead])
    return flags


async def deliver(broker: Broker, consumer: str, n: int) -> list[Any]:
    """Read n new entries as ``consumer``; they are then pending for it."""
    got = await broker.read_new(consumer, n, 10)
    assert len(got) == n
    return got


async def kill(broker: Broker, n: int, types: list[str] | None = None) -> list[Item]:
    """Ingest n events and dead-letter them all (after 3 attempts)."""
    types = types or ["A"] * n
    items: list[Item] = []
    for t in types:
        items += await ingest(broker, 1, type_=t)
    got = await deliver(broker, "c1", n)
    dead = [
        (g.entry, event_id, t, env, 3, "boom", "tb", 10, 20, True)
        for g, (event_id, env, _), t in zip(got, items, types, strict=True)
    ]
    assert await settle_dead(broker, "c1", dead) == [True] * n
    return items


async def set_idle(redis: Redis, keys: Keys, consumer: str, entries: list[str], idle_ms: int) -> None:
    """Make entries owned by ``consumer`` look idle for idle_ms (JUSTID: no delivery counted)."""
    r: Any = redis
    await r.xclaim(keys.stream, GROUP, consumer, 0, entries, idle=idle_ms, justid=True)


async def wait_idle(
    redis: Redis, keys: Keys, entries: list[str], idle_ms: int, timeout_s: float = 5.0
) -> None:
    """Poll XPENDING until every entry has been idle at least idle_ms."""
    r: Any = redis
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await r.xpending_range(keys.stream, GROUP, "-", "+", 100_000)
        idle = {row["message_id"]: int(row["time_since_delivered"]) for row in rows}
        if all(idle.get(e, -1) >= idle_ms for e in entries):
            return
        assert time.monotonic() < deadline, f"entries never became idle {idle_ms} ms: {idle}"
        await asyncio.sleep(0.005)


async def wait_gone(redis: Redis, key: str, timeout_s: float = 5.0) -> None:
    """Poll until a key no longer exists (e.g. its TTL ran out)."""
    r: Any = redis
    deadline = time.monotonic() + timeout_s
    while await r.exists(key):
        assert time.monotonic() < deadline, f"{key} still exists after {timeout_s}s"
        await asyncio.sleep(0.005)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)
