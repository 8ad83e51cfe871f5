"""The broker tests' building blocks: envelopes as ingest builds them, the scripts driven
through the broker's intents (ingest, deliver, settle), entries made to look idle, bounded polls of
Redis, and events enqueued the way the API does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from eventstream.broker import GROUP, Broker, Completion, DeadLetter, Keys, Layout, ScheduledRetry
from eventstream.broker.keys import Record, idem_digest
from eventstream.broker.scripts import Dedupe
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope

Item = tuple[str, bytes, Dedupe | str | None]


def make_items(n: int, type_: str = "A", key: str | None = None, start: int = 0) -> list[Item]:
    """n distinct events (envelopes as ingest builds them); ``key`` is the idempotency key."""
    return [
        to_envelope(IncomingEvent(type=type_, payload={"n": start + i}), key, now_ms())[:3] for i in range(n)
    ]


def key_in(layout: Layout, partition: int, name: str = "key") -> str:
    """An idempotency key (anonymous namespace) that routes to ``partition``."""
    for i in range(100_000):
        key = f"{name}-{i}"
        if layout.partition_of(idem_digest(key, None)) == partition:
            return key
    raise AssertionError(f"no key routes to partition {partition}")


def item_in(layout: Layout, partition: int, name: str = "key") -> Item:
    """One event whose idempotency key routes to ``partition``."""
    return make_items(1, key=key_in(layout, partition, name))[0]


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


async def renew(broker: Broker, consumer: str, entries: list[str], now: int) -> list[str]:
    """``broker.renew`` for entries of a one-partition deployment: the entries lost."""
    lost = await broker.renew(consumer, [(0, e) for e in entries], now)
    assert all(p == 0 for p, _ in lost), lost
    return [e for _, e in lost]


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


async def raw_record(redis: Redis, record: Record) -> bytes | None:
    """A dedupe record's value as stored (bytes; see keys.py), or None."""
    r: Any = redis
    value: bytes | None = await r.execute_command("HGET", record.hash, record.field, NEVER_DECODE=True)
    return value


async def server_ms(redis: Redis) -> int:
    r: Any = redis
    seconds, micros = await r.time()
    return int(seconds) * 1000 + int(micros) // 1000


def expiry_of(value: bytes) -> int:
    """When a dedupe record expires (ms)."""
    return int.from_bytes(value[:6], "big")


async def wait_gone(redis: Redis, key: str, timeout_s: float = 5.0) -> None:
    """Poll until a key no longer exists (e.g. its TTL ran out)."""
    r: Any = redis
    deadline = time.monotonic() + timeout_s
    while await r.exists(key):
        assert time.monotonic() < deadline, f"{key} still exists after {timeout_s}s"
        await asyncio.sleep(0.005)


async def put(broker: Broker, type_: str = "A", payload: dict[str, Any] | None = None) -> str:
    """Enqueue one event the way the API does; returns its event id."""
    item = to_envelope(IncomingEvent(type=type_, payload=payload or {}), None, now_ms())
    [accepted] = await enqueue(broker, [item], 60_000)
    assert not accepted.duplicate
    return accepted.event_id


async def put_many(broker: Broker, n: int, type_: str = "A") -> list[str]:
    now = now_ms()
    items = [to_envelope(IncomingEvent(type=type_, payload={"i": i}), None, now) for i in range(n)]
    accepted = await enqueue(broker, items, 60_000)
    return [a.event_id for a in accepted]
