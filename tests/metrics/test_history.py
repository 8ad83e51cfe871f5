"""The metrics history (eventstream.ops.history) on a real server and a real Redis
Cluster: one sample per step however many processes race for it, a bounded stream,
rates from real transitions, counter resets, gaps, and the oldest waiting event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from structlog.testing import capture_logs

from eventstream.broker import Broker, Layout, connect
from eventstream.ingest.accept import now_ms
from eventstream.ops import history
from eventstream.store import SqlStore
from tests.support.broker import ingest
from tests.support.conservation import check_layout
from tests.support.factories import failing_app, make_settings
from tests.support.workers import burst

TTL = 10_000
STEP = history.STEP_S * 1000
N = 3  # partitions


@pytest.fixture
def redis(server_or_cluster: Any) -> Any:
    """On one server and on the session's Redis Cluster (overrides the suite's)."""
    return server_or_cluster


@pytest.fixture
async def broker(redis: Redis, prefix: str) -> Broker:
    b = Broker(redis, Layout(prefix, N))
    await b.ensure_group()
    return b


def this_step() -> int:
    return history.step_of(now_ms())


async def entries(redis: Redis, broker: Broker) -> list[tuple[str, dict[str, str]]]:
    r: Any = redis
    return [(e, dict(f)) for e, f in await r.xrange(broker.keys.history)]


@pytest.fixture
def url(redis: Any, redis_url: str, request: pytest.FixtureRequest) -> str:
    """The URL of the server or cluster ``redis`` is a client of."""
    if isinstance(redis, RedisCluster):
        cluster_url: str = request.getfixturevalue("redis_cluster").url
        return cluster_url
    return redis_url


async def test_racing_processes_write_one_sample_per_step(
    redis: Redis, broker: Broker, prefix: str, url: str
) -> None:
    # eight processes, each with its own connection, racing for the same five steps
    clients = [await connect(url) for _ in range(8)]
    try:
        brokers = [Broker(c, Layout(prefix, N)) for c in clients]
        start = this_step()
        won = []
        for k in range(5):
            at = start + k * STEP + 1_000
            won.append(await asyncio.gather(*(history.record(b, at + i, TTL) for i, b in enumerate(brokers))))
    finally:
        for c in clients:
            await c.aclose()

    assert [sum(w) for w in won] == [1] * 5, won  # one writer per step, every other refused
    found = await entries(redis, broker)
    assert [e for e, _ in found] == [f"{start + k * STEP}-0" for k in range(5)]
    assert all(
        start + k * STEP + 1_000 <= int(f["t"]) < start + k * STEP + 1_008 for k, (_, f) in enumerate(found)
    )
    await check_layout(redis, broker.layout)  # the history key is in the layout


async def test_a_written_step_is_not_sampled_again(redis: Redis, broker: Broker) -> None:
    step = this_step()
    assert await history.record(broker, step + 100, TTL) is True
    assert await history.record(broker, step + 4_900, TTL) is False
    assert await history.record(broker, step - 1, TTL) is False  # an earlier step: too late
    [(entry, fields)] = await entries(redis, broker)
    assert (entry, fields["t"]) == (f"{step}-0", str(step + 100))


async def test_a_process_that_comes_second_skips_the_snapshot(redis: Redis, broker: Broker) -> None:
    step = this_step()
    assert await history.record(broker, step + 100, TTL)
    # a snapshot now fails (a counters hash that is not one): the second process never takes it
    counters = broker.partitions[0].keys.counters
    await redis.set(counters, "not a hash")
    try:
        assert await history.record(broker, step + 200, TTL) is False
        with pytest.raises(Exception, match="WRONGTYPE"):
            await history.record(broker, step + STEP, TTL)
    finally:
        await redis.delete(counters)


async def test_the_history_keeps_the_last_twenty_minutes(redis: Redis, broker: Broker) -> None:
    start = this_step() - 300 * STEP
    for k in range(298):  # 25 minutes of steps (samples of the counters alone: quicker)
        assert await broker.history.add(start + k * STEP, {"t": start + k * STEP}, start + (k - 242) * STEP)
    for k in (298, 299):
        assert await history.record(broker, start + k * STEP, TTL)
    found = await entries(redis, broker)
    last = start + 299 * STEP
    kept = [int(e.partition("-")[0]) for e, _ in found]
    assert kept == list(range(last - history.KEEP_S * 1000, last + 1, STEP))
    assert len(found) == history.KEEP_S // history.STEP_S + 1 <= 245
    points = await history.read(broker, history.MAX_WINDOW_S, now_ms=last + 1)
    assert len(points) == history.MAX_WINDOW_S // history.STEP_S
    assert all(p.rates is not None and p.gauges is not None for p in points)


async def test_rates_follow_real_transitions(
    redis: Redis, broker: Broker, prefix: str, redis_url: str, tmp_path: Path, store: SqlStore
) -> None:
    step = this_step()
    await history.record(broker, step + 1_000, TTL)
    # 6 processed; 2 refused for good (1 failed try, dead); 3 flaky (2 failed tries, 1 retry, dead)
    await ingest(broker, 6, "OK")
    await ingest(broker, 2, "PERM")
    await ingest(broker, 3, "FLAKY")
    settings = make_settings(redis_url, prefix, tmp_path, partitions=N)
    await burst(failing_app(), settings, broker, store)
    await history.record(broker, step + STEP + 3_000, TTL)  # 7 s after the first sample

    [first, second] = await history.read(broker, 60, now_ms=step + STEP + 3_000)
    assert first.rates is None  # no sample the step before
    assert second.rates == {
        "received": round(11 / 7, 3),
        "processed": round(6 / 7, 3),
        "failed": round(8 / 7, 3),
        "retried": round(3 / 7, 3),
        "deadLettered": round(5 / 7, 3),
    }
    assert second.gauges == {
        "queued": 0,
        "pending": 0,
        "scheduled": 0,
        "dlq": 5,
        "workers": 0,  # the burst worker left
        "oldestWaitingMs": 0,
    }
    assert first.gauges is not None
    assert first.gauges["dlq"] == 0


async def test_a_counter_reset_gives_no_negative_rate(redis: Redis, broker: Broker) -> None:
    await ingest(broker, 20)
    step = this_step()
    await history.record(broker, step + 1_000, TTL)
    for part in broker.partitions:  # as a Redis restarted empty would: every counter from zero
        await redis.delete(part.keys.counters)
    await ingest(broker, 4)
    await history.record(broker, step + STEP + 1_000, TTL)

    [_, after] = await history.read(broker, 60, now_ms=step + STEP + 1_000)
    assert after.rates is not None
    assert after.rates["received"] == 0.8  # 4 since the reset, over 5 s
    assert min(after.rates.values()) >= 0


async def test_steps_without_a_sample_stay_gaps(redis: Redis, broker: Broker) -> None:
    start = this_step() - 10 * STEP
    for k in (0, 1, 4, 5):  # no process ran in steps 2 and 3
        await ingest(broker, 5)
        await history.record(broker, start + k * STEP, TTL)

    points = await history.read(broker, 60, now_ms=start + 5 * STEP + 1)
    assert [p.t_ms for p in points] == [start + k * STEP for k in range(6)]
    present = [(p.rates is not None, p.gauges is not None) for p in points]
    assert present == [
        (False, True),
        (True, True),
        (False, False),
        (False, False),
        (False, True),
        (True, True),
    ]
    assert points[1].rates is not None
    assert points[1].rates["received"] == 1.0
    assert points[5].rates is not None
    assert points[5].rates["received"] == 1.0
    # the window: steps that started before it are left out, the one before it gives rates
    later = await history.read(broker, 10, now_ms=start + 5 * STEP + 1)
    assert [(p.t_ms, p.rates is not None) for p in later] == [
        (start + 4 * STEP, False),
        (start + 5 * STEP, True),
    ]


async def test_a_writer_whose_clock_is_ahead_is_named_once(redis: Redis, broker: Broker) -> None:
    step = this_step()
    ahead = step + 3_600_000
    assert await broker.history.add(ahead, {"t": ahead}, ahead - history.KEEP_S * 1000)
    sampler = history.Sampler(broker, TTL, offset_ms=0)
    with capture_logs() as logs:
        for k in range(3):
            assert await sampler.tick(step + k * STEP) is False  # the future step is the last
    [warning] = logs
    assert warning["log_level"] == "warning"
    assert "clock" in warning["event"]
    assert warning["ahead_s"] == 3600
    assert await history.read(broker, 60, now_ms=step) == []  # not shown as if it were now


async def test_the_oldest_waiting_event_in_any_partition(redis: Redis, broker: Broker) -> None:
    assert await broker.oldest_waiting_ms(now_ms()) == 0
    for _ in range(N):  # each call to the next partition
        await ingest(broker, 3)
        await asyncio.sleep(0.005)  # entry ids a few ms apart
    got = await broker.read_new("c1", 4, 10)
    r: Any = redis
    delivered = {(g.partition, g.entry) for g in got}
    waiting = [
        int(e.partition("-")[0])
        for part in broker.partitions
        for e, _ in await r.xrange(part.keys.stream)
        if (part.index, e) not in delivered
    ]
    assert got
    assert waiting, "some events wait"
    now = now_ms() + 2_000
    assert await broker.oldest_waiting_ms(now) == now - min(waiting)

    while await broker.read_new("c1", 100, 10):  # every event delivered: none waits
        pass
    assert await broker.oldest_waiting_ms(now) == 0
