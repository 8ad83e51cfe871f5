"""The audit function against a real Redis: clean states built through the real scripts
and worker, and deliberately corrupted ones, each found and named; the CLI's exit codes
(a real subprocess) and GET /admin/audit (the real app over ASGI)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, Completion, Keys, Layout, ScheduledRetry
from eventstream.broker.keys import order_digest
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import now_ms, to_envelope
from eventstream.ops.audit import AuditReport, audit
from eventstream.settings import Settings
from eventstream.store import ProcessedRow, SqlStore
from eventstream.worker import Worker
from tests.support.asgi import running
from tests.support.broker import deliver, ingest, kill, set_idle, settle_done, settle_retries
from tests.support.waiting import wait_until
from tests.support.workers import run_burst

VT_MS = 1_000
REPO_ROOT = Path(__file__).resolve().parents[2]


async def run_audit(broker: Broker, store: SqlStore, **kw: Any) -> AuditReport:
    return await audit(broker, store, now_ms(), visibility_timeout_ms=VT_MS, **kw)


async def record_rows(store: SqlStore, ids: list[str]) -> None:
    now = now_ms()
    await store.record([ProcessedRow(i, "A", "{}", None, None, None, None, None, 1, now, now) for i in ids])


async def complete(broker: Broker, store: SqlStore, consumer: str, got: list[Any]) -> None:
    """What a worker does for successes: store rows first, then the complete script."""
    await record_rows(store, [g.event_id for g in got])
    done = [(g.entry, g.event_id, False) for g in got]
    assert await settle_done(broker, consumer, done) == [True] * len(got)


def codes(report: AuditReport) -> dict[str, int]:
    return {p.code: p.count for p in report.problems}


def problem(report: AuditReport, code: str) -> tuple[int, tuple[str, ...]]:
    [p] = [p for p in report.problems if p.code == code]
    assert p.detail
    return p.count, p.examples


async def build_mixed_state(broker: Broker, store: SqlStore) -> dict[str, list[str]]:
    """Every kind of place, through the real scripts: processed, dead, deleted, replayed,
    scheduled for a retry (not yet due), in flight for a live worker, queued."""
    dead = await kill(broker, 3)  # c1 delivers and dead-letters 3
    dlq = await broker.scan_dead("-", 10)
    assert await broker.delete_dead([(dlq[0].dlq_entry, dlq[0].event_id)])
    assert await broker.replay_dead([dlq[1].dlq_entry])  # back in the stream
    items = await ingest(broker, 8)
    await broker.heartbeat("w1", now_ms())
    got = await deliver(broker, "w1", 5)  # the replayed one and 4 of the new ones
    await complete(broker, store, "w1", got[:2])
    retry = got[2]
    assert await settle_retries(
        broker, "w1", [(retry.entry, retry.event_id, now_ms() + 60_000, 1, now_ms(), b"{}")]
    ) == [True]
    return {
        "dead": [i[0] for i in dead],
        "new": [i[0] for i in items],
        "inflight": [g.event_id for g in got[3:]],
    }


async def test_a_clean_mixed_state_is_ok_and_the_sums_add_up(broker: Broker, store: SqlStore) -> None:
    await build_mixed_state(broker, store)
    report = await run_audit(broker, store)
    assert report.problems == (), report.problems
    assert report.ok
    # 3 dead (1 deleted, 1 replayed), 8 new: 11 received
    assert report.received == 11
    assert (report.processed, report.dlq, report.deleted) == (2, 1, 1)
    assert (report.pending, report.scheduled) == (2, 1)
    assert report.queued == 11 - 2 - 1 - 1 - 2 - 1
    assert report.accounted == report.received
    assert report.store_processed == 2
    body = report.to_json()
    assert body["ok"] is True
    assert body["storeProcessed"] == 2
    assert body["liveInStore"] == 0
    assert body["problems"] == []


async def test_an_empty_deployment_is_ok(redis: Redis, settings: Settings, store: SqlStore) -> None:
    broker = Broker(redis, Keys(settings.prefix))  # no stream, no group yet
    report = await run_audit(broker, store)
    assert report.ok
    assert report.received == report.accounted == 0


async def test_events_queued_before_any_worker_started_are_queued(
    redis: Redis, settings: Settings, store: SqlStore
) -> None:
    broker = Broker(redis, Keys(settings.prefix))  # the API alone: a stream, no group yet
    await ingest(broker, 3)
    report = await run_audit(broker, store)
    assert report.ok, report.problems
    assert (report.received, report.queued, report.pending) == (3, 3, 0)


async def test_states_left_by_a_real_worker_are_clean(
    broker: Broker, store: SqlStore, settings: Settings
) -> None:
    app = EventStream("audit")

    @app.handler("OK")
    async def ok(event: Any) -> None:
        pass

    @app.handler("BAD", max_attempts=2)
    async def bad(event: Any) -> None:
        raise RuntimeError("no")

    await ingest(broker, 30, "OK")
    await ingest(broker, 5, "BAD")
    await ingest(broker, 2, "NOBODY")
    await run_burst(app, settings, broker, store)
    report = await run_audit(broker, store)
    assert report.ok, report.problems
    assert (report.received, report.processed, report.dlq) == (37, 30, 7)
    assert report.store_processed == 30


async def test_entries_held_past_their_handlers_timeouts_are_reported(
    broker: Broker, store: SqlStore, settings: Settings
) -> None:
    # One thread, taken by a long handler: a short-timeout sync event waits for it,
    # in flight longer than its timeout allows. The worker says so when it renews its
    # leases, and the audit reports it while it lasts.
    settings = settings.model_copy(
        update={"sync_threads": 1, "visibility_timeout": 0.3, "handler_cancel_grace": 0.05}
    )
    app = EventStream("audit")
    release = threading.Event()
    started = threading.Event()

    @app.handler("LONG", timeout=30)
    def long(event: Any) -> None:
        started.set()
        release.wait(20)

    @app.handler("SHORT", timeout=0.05)
    def short(event: Any) -> None:
        pass

    await ingest(broker, 1, "LONG")
    worker = Worker(app, settings, broker, store)
    task = asyncio.create_task(worker.run(burst=True))
    try:
        await asyncio.to_thread(started.wait, 10)
        short_id = (await ingest(broker, 1, "SHORT"))[0][0]

        async def reported() -> bool:
            return "overdue_in_flight" in codes(await run_audit(broker, store))

        await wait_until(reported, what="the overdue entry to be reported")
        count, examples = problem(await run_audit(broker, store), "overdue_in_flight")
        assert count == 1
        assert examples[0].startswith(f"{short_id} ({worker.consumer}: ")
    finally:
        release.set()
        await asyncio.wait_for(task, 10)
    report = await run_audit(broker, store)
    assert report.ok, report.problems  # cleared once the worker caught up and left


async def test_pending_entries_of_a_vanished_consumer_are_stranded(
    redis: Redis, broker: Broker, store: SqlStore
) -> None:
    await ingest(broker, 5)
    ghost = await deliver(broker, "ghost", 2)
    await set_idle(redis, broker.keys, "ghost", [g.entry for g in ghost], 10 * VT_MS)
    # a live worker's entry idle as long is not stranded: its owner is alive (it renews)
    await broker.heartbeat("alive", now_ms())
    alive = await deliver(broker, "alive", 1)
    await set_idle(redis, broker.keys, "alive", [alive[0].entry], 10 * VT_MS)
    # a dead consumer's entry touched recently is not yet stranded either
    await broker.heartbeat("recent", now_ms() - 10 * VT_MS)
    await deliver(broker, "recent", 1)

    report = await run_audit(broker, store)
    assert codes(report) == {"stranded_pending": 2}
    _, examples = problem(report, "stranded_pending")
    assert sorted(examples) == sorted(f"{g.entry} (ghost)" for g in ghost)
    assert report.accounted == report.received  # the sums still hold: nothing is lost yet

    # a live worker reclaims them: clean again
    await broker.heartbeat("rescuer", now_ms())
    claimed, _ = await broker.reclaim("rescuer", 3 * VT_MS, 10, 5, now_ms())
    assert {c.entry for c in claimed} >= {g.entry for g in ghost}
    assert (await run_audit(broker, store)).ok


async def test_a_retry_long_past_due_is_reported(broker: Broker, store: SqlStore) -> None:
    await ingest(broker, 3)
    got = await deliver(broker, "w", 3)
    now = now_ms()
    retries = [
        (got[0].entry, got[0].event_id, now - 120_000, 1, now, b"{}"),  # two minutes overdue
        (got[1].entry, got[1].event_id, now - 10_000, 1, now, b"{}"),  # late, not yet suspicious
        (got[2].entry, got[2].event_id, now + 10_000, 1, now, b"{}"),
    ]
    assert await settle_retries(broker, "w", retries) == [True] * 3
    report = await run_audit(broker, store)
    assert codes(report) == {"overdue_retries": 1}
    assert problem(report, "overdue_retries") == (1, (got[0].event_id,))
    assert codes(await run_audit(broker, store, overdue_after_ms=5_000)) == {"overdue_retries": 2}


async def test_live_entries_already_in_the_store_are_reported(
    redis: Redis, broker: Broker, store: SqlStore
) -> None:
    items = await ingest(broker, 4)
    queued_done, settling = items[0][0], items[1][0]
    await broker.heartbeat("w", now_ms())
    got = await deliver(broker, "w", 2)  # items 0 and 1, in flight for w
    assert [g.event_id for g in got] == [queued_done, settling]
    # item 0: its worker vanished long ago after writing the row; item 1: a worker settling now
    await set_idle(redis, broker.keys, "w", [got[0].entry], 2 * VT_MS)
    # item 2: waits for a retry though its row exists
    more = await deliver(broker, "w", 1)
    assert await settle_retries(
        broker, "w", [(more[0].entry, more[0].event_id, now_ms() + 60_000, 1, now_ms(), b"{}")]
    ) == [True]
    await record_rows(store, [queued_done, settling, more[0].event_id])

    report = await run_audit(broker, store)
    assert codes(report) == {"completed_but_queued": 1, "completed_but_scheduled": 1}
    assert problem(report, "completed_but_queued") == (1, (f"{queued_done} ({got[0].entry})",))
    assert problem(report, "completed_but_scheduled") == (1, (more[0].event_id,))
    # the store leads the counter by exactly the live entries with rows: not a problem of its own
    assert report.store_processed == report.processed + 3
    assert report.live_in_store == 3


async def test_status_fields_that_point_nowhere_and_entries_without_one(
    redis: Redis, broker: Broker, store: SqlStore
) -> None:
    items = await ingest(broker, 3)
    r = redis
    k = broker.keys
    await r.hset(k.status, "vanished-q", "q:1-1")
    await r.hset(k.status, "vanished-r", "r:1:5")
    await r.hset(k.status, "vanished-d", "d:1-1")
    await r.hset(k.status, "garbage", "x")
    # items[1]'s field points at items[2]'s entry (holds another event)
    status = await r.hgetall(k.status)
    await r.hset(k.status, items[1][0], status[items[2][0]])
    await r.hdel(k.status, items[0][0])  # a live entry with no status
    report = await run_audit(broker, store)
    assert codes(report) == {"status_points_nowhere": 5, "live_without_status": 2}
    _, nowhere = problem(report, "status_points_nowhere")
    assert {e.split()[0] for e in nowhere} == {
        "vanished-q",
        "vanished-r",
        "vanished-d",
        "garbage",
        items[1][0],
    }
    _, without = problem(report, "live_without_status")
    assert {e.split()[0] for e in without} == {items[0][0], items[1][0]}


async def test_an_event_in_two_places_is_found(redis: Redis, broker: Broker, store: SqlStore) -> None:
    [(event_id, env, _)] = await ingest(broker, 1)
    # a second copy of the same event in the stream, as a double promotion would leave
    await redis.xadd(broker.keys.stream, {"id": event_id, "a": "1", "f": "", "e": env})
    await redis.hincrby(broker.keys.counters, "received", 1)  # so the sums alone look fine
    report = await run_audit(broker, store)
    assert codes(report) == {"live_without_status": 1}


async def test_an_event_both_processed_and_dead(broker: Broker, store: SqlStore) -> None:
    dead = await kill(broker, 2)
    await record_rows(store, [dead[1][0]])
    report = await run_audit(broker, store)
    assert codes(report) == {"processed_and_dead": 1, "store_vs_processed": 1}
    assert problem(report, "processed_and_dead") == (1, (dead[1][0],))
    assert report.store_processed == 1
    assert report.processed == 0


async def test_counters_off_by_one_break_conservation(redis: Redis, broker: Broker, store: SqlStore) -> None:
    await build_mixed_state(broker, store)
    assert (await run_audit(broker, store)).ok
    await redis.hincrby(broker.keys.counters, "received", 1)
    report = await run_audit(broker, store)
    assert codes(report) == {"conservation": 1}
    assert report.received == report.accounted + 1
    assert "lost" in report.problems[0].detail
    await redis.hincrby(broker.keys.counters, "received", -1)
    await redis.hincrby(broker.keys.counters, "processed", 1)
    report = await run_audit(broker, store)
    # one more completion counted than happened: the sums and the store both disagree
    assert codes(report) == {"conservation": 1, "store_vs_processed": 1}


async def test_examples_are_bounded_and_chunks_cover_everything(
    redis: Redis, broker: Broker, store: SqlStore
) -> None:
    await ingest(broker, 40)
    await redis.delete(broker.keys.status)
    report = await run_audit(broker, store, examples=3, chunk=7)
    assert codes(report) == {"live_without_status": 40}
    assert len(problem(report, "live_without_status")[1]) == 3


# ---- ordering -------------------------------------------------------------------------


async def ingest_keyed(broker: Broker, key: str, n: int) -> list[str]:
    """n events of one ordering key: the first released when the key is idle, the rest parked."""
    items = [
        to_envelope(IncomingEvent(type="A", payload={"n": i}, orderingKey=key), None, now_ms())
        for i in range(n)
    ]
    results = await broker.enqueue(items, 60_000)
    assert results == [(item[0], False) for item in items]
    return [item[0] for item in items]


async def build_parked_state(broker: Broker, store: SqlStore) -> dict[str, list[str]]:
    """Keys a (3 events), b (2) and c (1); a's first processed, which releases its second;
    b's first failed once and waits for a retry (its key stays busy): 2 parked."""
    ids = {key: await ingest_keyed(broker, key, n) for key, n in (("a", 3), ("b", 2), ("c", 1))}
    await broker.heartbeat("w1", now_ms())
    got = {g.event_id: g for g in await deliver(broker, "w1", 3)}
    a, b = got[ids["a"][0]], got[ids["b"][0]]
    await record_rows(store, [a.event_id])
    retry = ScheduledRetry(b.entry, b.event_id, now_ms() + 60_000, 1, now_ms(), b"{}", b.partition, b.order)
    done = Completion(a.entry, a.event_id, False, a.partition, a.order)
    assert await broker.settle("w1", done=[done], retries=[retry]) == ([True], [True], [])
    return ids


async def test_parked_events_in_a_consistent_state_are_ok(broker: Broker, store: SqlStore) -> None:
    await build_parked_state(broker, store)
    report = await run_audit(broker, store, chunk=1)
    assert report.problems == (), report.problems
    assert (report.received, report.processed, report.scheduled, report.parked) == (6, 1, 1, 2)
    assert (report.queued, report.pending) == (1, 1)  # a's second queued, c's in flight
    assert report.accounted == report.received
    assert report.to_json()["parked"] == 2


async def test_audits_while_a_worker_releases_parked_events_find_nothing(
    broker: Broker, store: SqlStore, settings: Settings
) -> None:
    app = EventStream("audit")

    @app.handler("A")
    async def handle(event: Any) -> None:
        await asyncio.sleep(0.002)

    for n in range(10):
        await ingest_keyed(broker, f"key-{n}", 5)
    worker = asyncio.create_task(run_burst(app, settings, broker, store))
    reports = []
    while not worker.done():
        reports.append(await run_audit(broker, store, chunk=3))
    await worker
    assert len(reports) > 1
    assert any(r.parked for r in reports)  # the audits saw parked events being released
    # the walk's findings only: the store's row count is read before the walk, so rows
    # written meanwhile can make store_vs_processed differ while a worker runs
    found = [p for r in reports for p in r.problems if p.code != "store_vs_processed"]
    assert found == []
    final = await run_audit(broker, store)
    assert final.ok, final.problems
    assert (final.processed, final.parked) == (50, 0)


async def strand(redis: Redis, keys: Keys, key: str) -> None:
    """Corrupt an ordering key: it counts no released event, its line stays."""
    digest = order_digest(key)
    value = await redis.hget(keys.order, digest)
    assert value is not None
    await redis.hset(keys.order, digest, ":".join(["0", *value.split(":")[1:]]))


async def lose_line(redis: Redis, keys: Keys, key: str) -> None:
    """Corrupt an ordering key: its line is gone, its parked bodies stay."""
    digest = order_digest(key)
    active, head, tail = (int(x) for x in (await redis.hget(keys.order, digest)).split(":"))
    await redis.hset(keys.order, digest, active)
    await redis.hdel(keys.lines, *(f"{digest}:{place}" for place in range(head, tail + 1)))


async def test_stranded_ordering_state_is_reported(redis: Redis, broker: Broker, store: SqlStore) -> None:
    ids = await build_parked_state(broker, store)
    ids |= {key: await ingest_keyed(broker, key, 3) for key in ("d", "e", "f")}  # 2 parked each
    k = broker.keys
    await strand(redis, k, "a")  # a's parked third: nothing will release it
    await strand(redis, k, "d")  # d's two
    await redis.hdel(k.status, ids["b"][1])  # a parked body with no status
    await redis.zrem(k.waiting, order_digest("e"))  # parked, but not in the waiting set
    await lose_line(redis, k, "f")  # f's line gone: its two bodies remain
    report = await run_audit(broker, store, chunk=2)
    assert codes(report) == {
        "parked_without_busy_key": 3,
        "live_without_status": 1,
        "parked_without_line": 2,
        "waiting_out_of_step": 2,
    }
    assert set(problem(report, "parked_without_busy_key")[1]) == {  # one per key: its first
        f"{ids['a'][2]} (key {order_digest('a')}: 1 parked)",
        f"{ids['d'][1]} (key {order_digest('d')}: 2 parked)",
    }
    assert problem(report, "live_without_status")[1] == (f"{ids['b'][1]} (parked: status missing)",)
    assert {e.split()[0] for e in problem(report, "parked_without_line")[1]} == set(ids["f"][1:])
    assert set(problem(report, "waiting_out_of_step")[1]) == {
        f"{order_digest('e')} (2 parked, not waiting)",
        f"{order_digest('f')} (0 parked, waiting)",
    }
    assert (report.parked, report.accounted) == (8, report.received)  # the sums still add up


# ---- the command and the route --------------------------------------------------------


def cli_audit(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
    env.update(
        {
            "EVENTSTREAM_REDIS_URL": settings.redis_url or "",
            "EVENTSTREAM_PREFIX": settings.prefix,
            "EVENTSTREAM_DATA_DIR": str(settings.data_dir),
            "EVENTSTREAM_VISIBILITY_TIMEOUT": "60",  # w1 stays live however slow the test
            "COLUMNS": "200",
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "eventstream", "audit", *args],
        env=env,
        cwd=settings.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_exits_0_when_clean_and_1_with_the_problem(
    redis: Redis, broker: Broker, store: SqlStore, settings: Settings
) -> None:
    assert settings.store_url.endswith(f"{settings.data_dir.name}/events.db")
    await build_mixed_state(broker, store)
    clean = cli_audit(settings)
    assert clean.returncode == 0, clean.stderr
    assert "OK" in clean.stdout
    assert "11" in clean.stdout  # received

    await redis.hset(broker.keys.status, "stray-event", "q:1-1")
    bad = cli_audit(settings)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "status_points_nowhere" in bad.stdout
    assert "stray-event" in bad.stdout

    as_json = cli_audit(settings, "--json")
    assert as_json.returncode == 1
    body = json.loads(as_json.stdout)
    assert body["ok"] is False
    assert body["problems"][0]["examples"] == ["stray-event (q:1-1)"]


def test_the_command_without_redis_is_a_usage_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
    r = subprocess.run(
        [sys.executable, "-m", "eventstream", "audit"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert "EVENTSTREAM_REDIS_URL" in r.stderr


async def test_the_route_returns_the_report_as_camel_case_json(redis: Redis, settings: Settings) -> None:
    async with running(settings) as api:
        await build_mixed_state(api.broker, api.store)
        r = await api.client.get("/admin/audit")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ok"] is True
        assert body["received"] == body["accounted"] == 11
        assert body["storeProcessed"] == 2

        await redis.hincrby(Keys(api.settings.prefix).counters, "received", 1)
        await redis.hset(Keys(api.settings.prefix).status, "stray", "d:1-1")
        r = await api.client.get("/admin/audit", params={"examples": 1})
        body = r.json()
        assert r.status_code == 200
        assert body["ok"] is False
        assert {p["code"]: p["count"] for p in body["problems"]} == {
            "conservation": 1,
            "status_points_nowhere": 1,
        }
        assert "/admin/audit" in (await api.client.get("/openapi.json")).json()["paths"]


async def test_the_command_prints_the_parked_events_and_their_problems(
    redis: Redis, broker: Broker, store: SqlStore, settings: Settings
) -> None:
    await build_parked_state(broker, store)
    clean = cli_audit(settings)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "+ scheduled + parked" in clean.stdout
    header, values = [
        [c.strip() for c in re.split("[┃│]", line)[1:-1]]
        for line in clean.stdout.splitlines()
        if "┃" in line or "│" in line
    ][:2]
    sums = dict(zip(header, values, strict=True))
    assert (sums["received"], sums["parked"], sums["accounted"]) == ("6", "2", "6")
    assert json.loads(cli_audit(settings, "--json").stdout)["parked"] == 2

    await strand(redis, broker.keys, "a")
    bad = cli_audit(settings)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "parked_without_busy_key" in bad.stdout


async def test_a_stranded_key_is_named_with_its_partition(redis: Redis, prefix: str, store: SqlStore) -> None:
    layout = Layout(prefix, 4)
    parted = Broker(redis, layout)
    keys: dict[int, str] = {}
    for i in range(1_000):  # two keys in two partitions
        keys.setdefault(layout.partition_of(order_digest(f"key-{i}")), f"key-{i}")
    (p1, k1), (p2, k2) = list(keys.items())[:2]
    ids = {k1: await ingest_keyed(parted, k1, 3), k2: await ingest_keyed(parted, k2, 2)}
    clean = await run_audit(parted, store)
    assert clean.ok, clean.problems
    shares = {s.partition: s.parked for s in clean.partitions}
    assert (shares[p1], shares[p2], clean.parked) == (2, 1, 3)

    await strand(redis, layout.parts[p1], k1)
    report = await run_audit(parted, store)
    assert codes(report) == {"parked_without_busy_key": 2}
    assert problem(report, "parked_without_busy_key")[1] == (
        f"{ids[k1][1]} (key {order_digest(k1)}: 2 parked) [partition {p1}]",
    )
