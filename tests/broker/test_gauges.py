"""Broker.gauges and Broker.safety_warnings."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, Keys, connect
from eventstream.ingest.accept import now_ms
from eventstream.ops import metrics
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker
from tests.support.broker import deliver, ingest, settle_dead, settle_done, settle_retries
from tests.support.conservation import check, state

TTL = 10_000


async def test_zero_before_the_stream_exists(redis: Redis, keys: Keys) -> None:
    fresh = Broker(redis, keys)  # no ensure_group: no stream, no group

    assert await fresh.gauges(now_ms(), TTL) == {
        "queued": 0,
        "pending": 0,
        "scheduled": 0,
        "dlq": 0,
        "workers": 0,
        "lag": 0,
        "overdue_retries": 0,
        "parked": 0,
        "busy_keys": 0,
        "oldest_parked_ms": 0,
        "outbox": 0,
    }


async def test_every_gauge_in_one_state(broker: Broker, redis: Redis, keys: Keys) -> None:
    items = await ingest(broker, 7)
    got = await deliver(broker, "c1", 5)
    now = now_ms()
    retries = [
        (got[0].entry, items[0][0], now - 1_000, 1, now, items[0][1]),  # overdue
        (got[1].entry, items[1][0], now + 60_000, 1, now, items[1][1]),
    ]
    await settle_retries(broker, "c1", retries)
    await settle_dead(broker, "c1", [(got[2].entry, items[2][0], "A", items[2][1], 1, "x", "", 1, 2, True)])
    await settle_done(broker, "c1", [(got[3].entry, items[3][0], False)])
    await broker.heartbeat("alive", now - 1_000)
    await broker.heartbeat("also-alive", now)
    await broker.heartbeat("gone", now - TTL - 1_000)
    s = await check(redis, keys)
    assert len(s.stream) == 3
    assert len(s.pending) == 1

    assert await broker.gauges(now, TTL) == {
        "queued": 2,  # items 5 and 6, never delivered
        "pending": 1,  # item 4, with c1
        "scheduled": 2,
        "dlq": 1,
        "workers": 2,
        "lag": 2,
        "overdue_retries": 1,
        "parked": 0,  # the ordering gauges: tests/broker/test_ordering.py
        "busy_keys": 0,
        "oldest_parked_ms": 0,
        "outbox": 0,
    }


@pytest.mark.parametrize("settle", ["complete", "retry", "dead"])
async def test_lag_and_queued_agree_after_settling_the_newest_delivered_entry(
    broker: Broker, redis: Redis, settle: str
) -> None:
    # deleting a settled entry leaves a tombstone in the stream; the gauges must still
    # count only the entries never delivered
    items = await ingest(broker, 4)
    got = await deliver(broker, "c1", 2)
    g, (event_id, env, _) = got[1], items[1]
    if settle == "complete":
        await settle_done(broker, "c1", [(g.entry, event_id, False)])
    elif settle == "retry":
        await settle_retries(broker, "c1", [(g.entry, event_id, now_ms() + 60_000, 1, 1, env)])
    else:
        await settle_dead(broker, "c1", [(g.entry, event_id, "A", env, 1, "x", "", 1, 2, True)])

    gauges = await broker.gauges(now_ms(), TTL)

    assert (gauges["queued"], gauges["pending"], gauges["lag"]) == (2, 1, 2)


async def test_gauges_follow_the_whole_lifecycle(broker: Broker, redis: Redis) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    [got] = await deliver(broker, "c1", 1)
    now = now_ms()
    await settle_retries(broker, "c1", [(got.entry, event_id, now, 1, now, env)])
    assert (await broker.gauges(now - 1, TTL))["overdue_retries"] == 0
    assert (await broker.gauges(now, TTL))["overdue_retries"] == 1

    await broker.promote(now, 10)
    g = await broker.gauges(now, TTL)
    assert (g["queued"], g["pending"], g["scheduled"], g["lag"]) == (1, 0, 0, 1)

    [again] = await deliver(broker, "c1", 1)
    await settle_done(broker, "c1", [(again.entry, event_id, False)])
    g = await broker.gauges(now, TTL)
    assert (g["queued"], g["pending"], g["scheduled"], g["dlq"], g["lag"]) == (0, 0, 0, 0, 0)


# ---- safety_warnings: CONFIG SET on the shared test server, always restored ------------


@asynccontextmanager
async def config_set(redis: Redis, name: str, value: str) -> AsyncIterator[None]:
    r: Any = redis
    original = (await r.config_get(name))[name]
    await r.config_set(name, value)
    try:
        yield
    finally:
        await r.config_set(name, original)
        assert (await r.config_get(name))[name] == original
        if name == "appendonly" and original == "yes":
            await wait_aof_written(redis)


async def wait_aof_written(redis: Redis, timeout_s: float = 10.0) -> None:
    """Turning appendonly back on starts a rewrite of the initial AOF; until it ends the
    server is not yet durable and refuses a clean shutdown. Poll until it has ended."""
    r: Any = redis
    deadline = time.monotonic() + timeout_s
    while True:
        info = await r.info("persistence")
        busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
        if info["aof_enabled"] and not busy:
            return
        assert time.monotonic() < deadline, f"AOF rewrite did not finish: {info}"
        await asyncio.sleep(0.01)


async def test_no_warning_for_the_safe_test_server(broker: Broker, redis: Redis) -> None:
    r: Any = redis
    assert (await r.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    assert (await r.config_get("appendonly"))["appendonly"] == "yes"

    assert await broker.safety_warnings() == []


async def test_warns_about_an_evicting_memory_policy(broker: Broker, redis: Redis) -> None:
    async with config_set(redis, "maxmemory-policy", "allkeys-lru"):
        warnings = await broker.safety_warnings()

    assert len(warnings) == 1
    assert "maxmemory-policy is 'allkeys-lru'" in warnings[0]
    assert "noeviction" in warnings[0]
    assert await broker.safety_warnings() == []


async def test_warns_when_append_only_is_off(broker: Broker, redis: Redis) -> None:
    r: Any = redis
    assert (await r.config_get("save"))["save"] == ""
    async with config_set(redis, "appendonly", "no"):
        without_snapshots = await broker.safety_warnings()
        async with config_set(redis, "save", "3600 1"):
            with_snapshots = await broker.safety_warnings()

    assert len(without_snapshots) == 1
    assert "appendonly is 'no'" in without_snapshots[0]
    assert "loses everything" in without_snapshots[0]
    assert len(with_snapshots) == 1
    assert "loses events since the last snapshot" in with_snapshots[0]
    assert await broker.safety_warnings() == []


async def test_warns_about_both(broker: Broker, redis: Redis) -> None:
    async with config_set(redis, "maxmemory-policy", "volatile-ttl"), config_set(redis, "appendonly", "no"):
        warnings = await broker.safety_warnings()

    assert len(warnings) == 2
    assert "maxmemory-policy" in warnings[0]
    assert "appendonly" in warnings[1]


async def test_says_so_when_config_cannot_be_read(redis: Redis, redis_url: str, keys: Keys) -> None:
    r: Any = redis
    user, password = f"noconfig-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await r.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    limited = await connect(redis_url, username=user, password=password)
    try:
        warnings = await Broker(limited, keys).safety_warnings()
    finally:
        await limited.aclose()
        await r.acl_deluser(user)

    assert len(warnings) == 1
    assert "cannot read the server's config" in warnings[0]


async def test_lag_when_the_group_is_created_after_events_arrived(redis: Redis, keys: Keys) -> None:
    late = Broker(redis, keys)
    await ingest(late, 3)  # ingest creates the stream; no worker has created the group yet
    await late.ensure_group()

    g = await late.gauges(now_ms(), TTL)
    assert (g["queued"], g["pending"], g["lag"]) == (3, 0, 3)


async def test_lag_never_exceeds_what_is_queued_when_redis_counters_are_off(
    broker: Broker, redis: Redis, keys: Keys
) -> None:
    # After an AOF reload under load Redis's entries-added counter can run ahead of the
    # stream: XINFO GROUPS then reports a lag of thousands with nothing queued.
    await ingest(broker, 4)
    await broker.ensure_group()
    await deliver(broker, "c1", 1)
    last = (await redis.xrevrange(keys.stream, "+", "-", count=1))[0][0]
    await redis.execute_command("XSETID", keys.stream, last, "ENTRIESADDED", 73_158)
    [group] = await redis.xinfo_groups(keys.stream)
    assert int(group["lag"]) > 70_000  # what Redis says
    g = await broker.gauges(now_ms(), TTL)
    assert (g["queued"], g["pending"], g["lag"]) == (3, 1, 3)
    await deliver(broker, "c1", 3)
    g = await broker.gauges(now_ms(), TTL)
    assert (g["queued"], g["pending"], g["lag"]) == (0, 4, 0)


async def test_gauges_match_the_state_through_a_random_walk(broker: Broker, redis: Redis, keys: Keys) -> None:
    rng = random.Random(20240601)
    delivered: list[tuple[str, str, bytes]] = []  # pending (entry, event id, envelope)
    envelopes: dict[str, bytes] = {}
    for step in range(150):
        op = rng.choice(["ingest", "deliver", "complete", "retry", "dead", "promote", "replay", "delete"])
        now = now_ms()
        if op == "ingest":
            envelopes.update({i: e for i, e, _ in await ingest(broker, rng.randint(1, 3))})
        elif op == "deliver":
            for got in await broker.read_new("c1", rng.randint(1, 3), 1):
                delivered.append((got.entry, got.event_id, envelopes[got.event_id]))
        elif delivered and op in {"complete", "retry", "dead"}:
            entry, event_id, env = delivered.pop(rng.randrange(len(delivered)))
            if op == "complete":
                ok = await settle_done(broker, "c1", [(entry, event_id, False)])
            elif op == "retry":
                due = now + rng.choice([-5, 60_000])
                ok = await settle_retries(broker, "c1", [(entry, event_id, due, 1, now, env)])
            else:
                dead = [(entry, event_id, "A", env, 1, "x", "", now, now, True)]
                ok = await settle_dead(broker, "c1", dead)
            assert ok == [True]
        elif op == "promote":
            await broker.promote(now, rng.randint(1, 3))
        elif op in {"replay", "delete"}:
            s = await state(redis, keys)
            if s.dlq:
                entry, fields = rng.choice(s.dlq)
                if op == "replay":
                    assert await broker.replay_dead([entry]) == [fields["id"]]
                else:
                    assert await broker.delete_dead([(entry, fields["id"])]) == [fields["id"]]

        s = await check(redis, keys)
        g = await broker.gauges(now, TTL)
        assert g["pending"] == len(s.pending) == len(delivered), (step, op)
        assert g["queued"] == g["lag"] == len(s.stream) - len(delivered), (step, op, g)
        assert (g["scheduled"], g["dlq"]) == (len(s.retry), len(s.dlq))
        assert g["overdue_retries"] == sum(1 for due in s.retry.values() if due <= now)


async def test_a_snapshot_obeys_the_conservation_law_while_a_worker_drains(
    broker: Broker, settings: Settings, store: SqlStore
) -> None:
    # Counters and gauges read at two instants disagree whenever a completion lands in
    # between; what /metrics shows is read in one MULTI, so the law holds in every read.
    app = EventStream("snap")

    @app.handler("A")
    async def handle(event: Any) -> None:
        if event.payload["n"] % 7 == 0 and event.attempt == 1:
            raise RuntimeError("retry me")

    await ingest(broker, 3_000)
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run(burst=True))
    reads = 0
    try:
        while not task.done():
            snap = await metrics.snapshot(broker, now_ms(), TTL)
            c, g = snap.counters, snap.gauges
            settled = c.get("processed", 0) + g["dlq"] + c.get("deleted", 0)
            assert c.get("received", 0) == settled + g["queued"] + g["pending"] + g["scheduled"], snap
            reads += 1
    finally:
        await asyncio.wait_for(task, 30)
    assert reads > 10
    assert (await broker.counters())["processed"] == 3_000
