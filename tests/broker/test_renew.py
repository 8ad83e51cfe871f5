"""renew.lua: extend leases of owned entries, report lost ones, heartbeat."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from eventstream.broker import GROUP, Broker, Keys
from eventstream.ingest.accept import now_ms
from tests.support.broker import deliver, ingest, renew, set_idle, settle_done, settle_retries, wait_idle
from tests.support.conservation import Pending, check

VT = 5_000


async def idle_of(redis: Redis, keys: Keys) -> dict[str, int]:
    r: Any = redis
    rows = await r.xpending_range(keys.stream, GROUP, "-", "+", 100)
    return {row["message_id"]: int(row["time_since_delivered"]) for row in rows}


async def test_resets_idle_without_counting_a_delivery(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    entries = [g.entry for g in got]
    await set_idle(redis, keys, "c1", entries, VT * 2)
    before = await check(redis, keys)
    now = now_ms()

    assert await renew(broker, "c1", entries, now) == []

    idle = await idle_of(redis, keys)
    assert all(idle[e] < VT for e in entries), idle
    after = await check(redis, keys)
    assert after.pending == [Pending(e, "c1", 1) for e in entries]
    assert after.workers == {"c1": now}
    assert after.stream == before.stream
    assert after.status == before.status
    assert after.counters == before.counters == {"received": 2}


async def test_renewed_entries_are_not_reclaimed(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    entries = [g.entry for g in got]
    await set_idle(redis, keys, "c1", entries, VT + 1)

    await renew(broker, "c1", [entries[0]], now_ms())
    claimed, dead = await broker.reclaim("c2", VT, 10, 3, now_ms())

    assert ([c.entry for c in claimed], dead) == ([entries[1]], [])
    s = await check(redis, keys)
    assert s.pending == [Pending(entries[0], "c1", 1), Pending(entries[1], "c2", 2)]


async def test_renewing_in_real_time_keeps_the_lease(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    vt = 200
    await wait_idle(redis, keys, [got.entry], vt // 2)

    assert await renew(broker, "c1", [got.entry], now_ms()) == []
    # right after a renew the entry has been idle far less than the visibility timeout
    assert await broker.reclaim("c2", vt, 10, 3, now_ms()) == ([], [])

    await wait_idle(redis, keys, [got.entry], vt)  # no renew: the lease runs out
    claimed, _ = await broker.reclaim("c2", vt, 10, 3, now_ms())
    assert [c.entry for c in claimed] == [got.entry]


async def test_returns_entries_taken_over_and_leaves_them_alone(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    await ingest(broker, 2)
    got = await deliver(broker, "c1", 2)
    entries = [g.entry for g in got]
    await set_idle(redis, keys, "c1", [entries[1]], VT + 1)
    claimed, _ = await broker.reclaim("c2", VT, 10, 3, now_ms())
    assert [c.entry for c in claimed] == [entries[1]]
    await set_idle(redis, keys, "c2", [entries[1]], VT * 3)
    before = await check(redis, keys)

    lost = await renew(broker, "c1", entries, now_ms())

    assert lost == [entries[1]]
    after = await check(redis, keys)
    assert after.pending == before.pending == [Pending(entries[0], "c1", 1), Pending(entries[1], "c2", 2)]
    assert (await idle_of(redis, keys))[entries[1]] >= VT * 3  # c2's lease not touched by c1
    assert after.counters == before.counters


async def test_returns_entries_already_settled(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 3)
    got = await deliver(broker, "c1", 3)
    await settle_done(broker, "c1", [(got[0].entry, got[0].event_id, False)])
    now = now_ms()
    retry = [(got[2].entry, got[2].event_id, now + 60_000, 1, now, items[2][1])]
    await settle_retries(broker, "c1", retry)
    before = await check(redis, keys)

    lost = await renew(broker, "c1", [g.entry for g in got], now_ms())

    assert lost == [got[0].entry, got[2].entry]
    after = await check(redis, keys)
    assert after.stream == before.stream
    assert after.pending == before.pending == [Pending(got[1].entry, "c1", 1)]
    assert after.retry == before.retry
    assert after.status == before.status
    assert after.counters == before.counters


async def test_renew_does_not_resurrect_a_queued_entry(broker: Broker, redis: Redis, keys: Keys) -> None:
    # an entry never delivered to this worker is not its to renew
    await ingest(broker, 1)
    before = await check(redis, keys)
    [(entry, _)] = before.stream

    assert await renew(broker, "c1", [entry], now_ms()) == [entry]

    after = await check(redis, keys)
    assert after.pending == []
    assert after.stream == before.stream


async def test_heartbeat_only(broker: Broker, redis: Redis, keys: Keys) -> None:
    assert await renew(broker, "c1", [], 1_000) == []
    assert await renew(broker, "c2", [], 2_000) == []
    assert await renew(broker, "c1", [], 3_000) == []

    s = await check(redis, keys)
    assert s.workers == {"c1": 3_000, "c2": 2_000}
    assert s.stream == []
    assert s.counters == {}


async def test_a_group_larger_than_one_chunk(broker: Broker, redis: Redis, keys: Keys) -> None:
    await ingest(broker, 1_500)
    got = await deliver(broker, "c1", 1_500)
    entries = [g.entry for g in got]
    taken = entries[::7]
    await set_idle(redis, keys, "c1", entries, VT * 2)
    r: Any = redis
    await r.xclaim(keys.stream, GROUP, "c2", 0, taken, idle=VT * 2, justid=True)

    assert await renew(broker, "c1", entries, now_ms()) == taken

    rows = await r.xpending_range(keys.stream, GROUP, "-", "+", 10_000)
    idle = {row["message_id"]: (row["consumer"], int(row["time_since_delivered"])) for row in rows}
    assert all(idle[e][1] < VT for e in entries if e not in taken)
    assert all(idle[e][0] == "c2" and idle[e][1] >= VT * 2 for e in taken)
    await check(redis, keys)
