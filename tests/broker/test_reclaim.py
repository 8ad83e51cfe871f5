"""reclaim.lua: take over expired leases; dead-letter entries delivered too often."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventstream.broker import GROUP, Broker, Keys, StreamEntry
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, set_idle, settle_done, settle_retries, wait_idle
from tests.support.conservation import Pending, check

VT = 5_000  # visibility timeout used with set_idle: no waiting needed


async def set_delivered(redis: Redis, keys: Keys, consumer: str, entries: list[str], deliveries: int) -> None:
    """Make entries look delivered ``deliveries`` times and expired (XCLAIM RETRYCOUNT)."""
    r: Any = redis
    await r.xclaim(keys.stream, GROUP, consumer, 0, entries, idle=VT + 1, retrycount=deliveries, justid=True)


async def test_claims_expired_entries_of_another_consumer(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    await set_idle(redis, keys, "c1", [g.entry for g in got], VT + 1)
    before = await check(redis, keys)

    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert dead == []
    assert claimed == [
        StreamEntry(g.entry, event_id, 0, None, env.decode())
        for g, (event_id, env, _) in zip(got, items, strict=True)
    ]
    s = await check(redis, keys)
    assert s.pending == [Pending(g.entry, "c2", 2) for g in got]
    assert s.stream == before.stream
    assert s.stream == [
        (g.entry, {"id": event_id, "e": env.decode()})
        for g, (event_id, env, _) in zip(got, items, strict=True)
    ]
    assert s.status == before.status
    assert s.counters == {"received": 2, "reclaimed": 2}

    # the new owner can settle them; the old one cannot
    assert await settle_done(broker, "c1", [(got[0].entry, got[0].event_id, False)]) == [False]
    done = [(g.entry, g.event_id, False) for g in got]
    assert await settle_done(broker, "c2", done) == [True, True]
    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.status == {}


async def test_claims_after_a_real_visibility_timeout(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    await wait_idle(redis, keys, [got.entry], 20)

    claimed, dead = await broker.reclaim("c2", 20, 10, 3, now_ms())

    assert ([c.entry for c in claimed], dead) == ([got.entry], [])
    s = await check(redis, keys)
    assert s.pending == [Pending(got.entry, "c2", 2)]


async def test_ignores_entries_not_yet_idle(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    await set_idle(redis, keys, "c1", [got[0].entry], VT - 1_000)
    before = await check(redis, keys)

    assert await broker.reclaim("c2", VT, 10, 3, now_ms()) == ([], [])

    assert await check(redis, keys) == before


async def test_takes_expired_entries_the_caller_owns(broker: Broker, redis: Redis, keys: Keys) -> None:
    # A worker renews what it handles; its own entry idle past the timeout is one whose
    # XREADGROUP reply it never got (connection cut, Redis restarted): with no other
    # worker running, nobody else would ever take it.
    await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    await set_idle(redis, keys, "c1", [g.entry for g in got[:2]], VT * 10)

    claimed, dead = await broker.reclaim("c1", VT, 10, 3, now_ms())

    assert ([c.entry for c in claimed], dead) == ([g.entry for g in got[:2]], [])
    after = await check(redis, keys)
    assert after.pending == [Pending(got[0].entry, "c1", 2), Pending(got[1].entry, "c1", 2),
                             Pending(got[2].entry, "c1", 1)]  # fmt: skip


async def test_ignores_queued_entries(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 3)
    before = await check(redis, keys)

    assert await broker.reclaim("c2", 0, 10, 3, now_ms()) == ([], [])

    assert await check(redis, keys) == before


async def test_count_limits_the_entries_looked_at(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 5)
    got = await deliver(broker, "c1", 5)
    await set_idle(redis, keys, "c1", [g.entry for g in got], VT + 1)

    claimed, _ = await broker.reclaim("c2", VT, 2, 3, now_ms())

    assert [c.entry for c in claimed] == [got[0].entry, got[1].entry]
    s = await check(redis, keys)
    assert [p.consumer for p in s.pending] == ["c2", "c2", "c1", "c1", "c1"]
    assert s.counters == {"received": 5, "reclaimed": 2}


async def test_dead_letters_once_deliveries_reach_the_maximum(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [(event_id, env, _)] = await ingest(broker, 1, type_="order.paid")
    [got] = await deliver(broker, "c1", 1)  # delivery 1

    # delivery 2: c2 takes over a crashed c1
    await set_idle(redis, keys, "c1", [got.entry], VT + 1)
    claimed, dead = await broker.reclaim("c2", VT, 10, 2, now_ms())
    assert ([c.entry for c in claimed], dead) == ([got.entry], [])

    # c2 crashes too: delivered 2 times, max 2 -> the DLQ, not a third delivery
    await set_idle(redis, keys, "c2", [got.entry], VT + 1)
    now = now_ms()
    claimed, dead = await broker.reclaim("c3", VT, 10, 2, now)

    assert (claimed, dead) == ([], [(event_id, "order.paid", 2)])  # for the worker's log line
    s = await check(redis, keys)
    assert s.stream == []
    assert s.pending == []
    assert s.retry == {}
    [(dlq_entry, fields)] = s.dlq
    assert fields["reason"].startswith("WorkerLost: delivered 2 times")
    assert fields == {
        "id": event_id,
        "t": "order.paid",
        "e": env.decode(),
        "a": "2",
        "reason": fields["reason"],
        "tb": "",
        "ff": str(now),
        "lf": str(now),
    }
    assert s.status == {event_id: f"d:{dlq_entry}"}
    assert s.counters == {"received": 1, "reclaimed": 1, "dead_lettered": 1}

    # neither crashed worker can settle it any more
    for consumer in ("c1", "c2"):
        assert await settle_done(broker, consumer, [(got.entry, event_id, False)]) == [False]
    assert (await check(redis, keys)).counter("rejected_completions") == 2


async def test_deliveries_driven_by_reading_history(broker: Broker, redis: Redis, keys: Keys) -> None:
    r: Any = redis
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    for _ in range(2):  # c1 reads its own pending entry again: each read is a delivery
        reply = await r.xreadgroup(GROUP, "c1", {keys.stream: "0"}, count=10)
        assert [e for e, _ in reply[0][1]] == [got.entry]
    s = await check(redis, keys)
    assert s.pending == [Pending(got.entry, "c1", 3)]
    await wait_idle(redis, keys, [got.entry], 10)

    claimed, dead = await broker.reclaim("c2", 10, 10, 3, now_ms())

    assert (claimed, len(dead)) == ([], 1)
    s = await check(redis, keys)
    assert s.dlq[0][1]["a"] == "3"
    assert s.counters == {"received": 1, "dead_lettered": 1}


async def test_dead_letter_keeps_attempts_and_first_failure_of_a_retried_event(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    first = now_ms() - 10_000
    await settle_retries(broker, "c1", [(got.entry, event_id, 0, 4, first, env)])
    assert await broker.promote(now_ms(), 10) == 1
    [again] = await deliver(broker, "c1", 1)
    await set_delivered(redis, keys, "c1", [again.entry], 3)

    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert (claimed, len(dead)) == ([], 1)
    s = await check(redis, keys)
    [(_, fields)] = s.dlq
    assert (fields["a"], fields["ff"]) == ("7", str(first))  # 4 attempts before + 3 deliveries
    assert s.counters == {"received": 1, "failed": 1, "retried": 1, "dead_lettered": 1}


async def test_claims_and_dead_letters_in_one_call(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    await set_idle(redis, keys, "c1", [g.entry for g in got], VT + 1)
    await set_delivered(redis, keys, "c1", [got[1].entry], 5)

    claimed, dead = await broker.reclaim("c2", VT, 10, 5, now_ms())

    assert ([c.entry for c in claimed], len(dead)) == ([got[0].entry, got[2].entry], 1)
    s = await check(redis, keys)
    assert s.stream_ids() == [items[0][0], items[2][0]]
    assert s.dlq_ids() == [items[1][0]]
    assert s.pending == [Pending(got[0].entry, "c2", 2), Pending(got[2].entry, "c2", 2)]
    assert s.counters == {"received": 3, "reclaimed": 2, "dead_lettered": 1}


async def test_mixed_owners(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 3)
    [a] = await deliver(broker, "c1", 1)
    [b] = await deliver(broker, "c2", 1)
    [c] = await deliver(broker, "c3", 1)
    await set_idle(redis, keys, "c1", [a.entry], VT + 1)  # expired, another owner: claimed
    await set_idle(redis, keys, "c2", [b.entry], VT + 1)  # expired, the caller's own: claimed

    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert ([c.entry for c in claimed], dead) == ([a.entry, b.entry], [])
    s = await check(redis, keys)
    assert s.pending == [Pending(a.entry, "c2", 2), Pending(b.entry, "c2", 2), Pending(c.entry, "c3", 1)]


async def test_malformed_envelope_is_dead_lettered_without_a_type(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # Regression: a non-string "type" (null, object, boolean) made XADD fail after the
    # XDEL, so the event vanished and the batch's counters were never written.
    items = [
        ("ok", b'{"type": "A"}', "A"),
        ("not-json", b"not json", ""),
        ("null-type", b'{"type": null}', ""),
        ("object-type", b'{"type": {}}', ""),
        ("bool-type", b'{"type": true}', ""),
        ("array", b"[1, 2]", ""),
    ]
    await broker.enqueue([(i, e, None) for i, e, _ in items], 60_000)
    got = await deliver(broker, "c1", len(items))
    await set_delivered(redis, keys, "c1", [g.entry for g in got], 3)

    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert (claimed, len(dead)) == ([], len(items))
    s = await check(redis, keys)
    assert [(f["id"], f["t"], f["e"]) for _, f in s.dlq] == [(i, t, e.decode()) for i, e, t in items]
    assert s.counters == {"received": len(items), "dead_lettered": len(items)}


async def test_entry_deleted_while_pending_is_dropped_not_claimed(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    r: Any = redis
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    await set_idle(redis, keys, "c1", [g.entry for g in got], VT + 1)
    await r.xdel(keys.stream, got[0].entry)  # behind the broker's back

    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert ([c.entry for c in claimed], dead) == ([got[1].entry], [])
    pel = await r.xpending_range(keys.stream, GROUP, "-", "+", 10)
    assert [(p["message_id"], p["consumer"]) for p in pel] == [(got[1].entry, "c2")]
    assert (await broker.counters()) == {"received": 2, "reclaimed": 1}
