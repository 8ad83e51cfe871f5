"""Workers that die, stop, or run long: kill -9, SIGTERM under load, lease renewal."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from eventstream.broker.keys import GROUP, Keys
from tests.support.effects import count_side_effects, side_effects
from tests.support.http import get_metrics, page_all, wait_drained
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


def post_batch(client: httpx.Client, events: list[dict[str, object]]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(events), 500):
        r = client.post("/events/batch", json={"events": events[start : start + 500]})
        assert r.status_code == 200, r.text
        assert r.json()["rejected"] == 0
        ids += [item["eventId"] for item in r.json()["results"]]
    return ids


def in_flight_event_ids(redis_url: str, prefix: str) -> set[str]:
    """Event ids of the entries delivered to some worker and not yet acknowledged (the PEL)."""
    keys = Keys(prefix)
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        pending = r.xpending_range(keys.stream, GROUP, min="-", max="+", count=10_000)
        ids = set()
        for p in pending:
            found = r.xrange(keys.stream, p["message_id"], p["message_id"])
            assert found, f"pending entry {p['message_id']} is not in the stream"
            ids.add(found[0][1]["id"])
        return ids


@pytest.mark.timeout(120)
def test_kill_9_mid_batch_loses_nothing_and_reruns_only_in_flight_events(
    cluster: Cluster, client: httpx.Client, redis_url: str, prefix: str
) -> None:
    total, concurrency = 600, 50
    # Every tenth handler takes 2 s, so some entries are surely in flight at the kill: with equal
    # durations a whole read can finish and be acknowledged together just before it, leaving none.
    events = [{"type": "SLOW", "payload": {"ms": 2000 if i % 10 == 0 else 40, "n": i}} for i in range(total)]
    ids = post_batch(client, events)
    assert len(set(ids)) == total

    victim = cluster.start_worker(concurrency=concurrency)
    wait_for(
        lambda: sum(count_side_effects(cluster.side_file, "SLOW").values()) >= 150,
        "the first worker to run 150 handlers",
        timeout=60,
        interval=0.005,
    )
    cluster.kill9(victim)

    ran_before = count_side_effects(cluster.side_file, "SLOW")
    at_kill = get_metrics(client)
    in_flight = in_flight_event_ids(redis_url, prefix)
    assert at_kill["pending"] == len(in_flight)
    assert 0 < len(in_flight) <= concurrency, "the worker holds at most `concurrency` entries"
    assert at_kill["processed"] < total, "the worker was not killed mid-batch: everything was done"
    assert at_kill["processed"] + at_kill["pending"] + at_kill["queued"] == total

    survivor = cluster.start_worker(concurrency=concurrency, EVENTSTREAM_VISIBILITY_TIMEOUT="1")
    final = wait_drained(client, total, timeout=60)

    items = page_all(client, "/events")
    stored = Counter(it["id"] for it in items)
    assert set(stored) == set(ids), "every accepted event is in the store"
    assert set(stored.values()) == {1}, "each event is in the store exactly once"
    assert page_all(client, "/failed-events") == []

    runs = count_side_effects(cluster.side_file, "SLOW")
    assert set(runs) == set(ids), "every event's handler ran"
    twice = {event_id for event_id, n in runs.items() if n == 2}
    more = {event_id: n for event_id, n in runs.items() if n > 2}
    skipped = final["redeliveredSkipped"]
    figures = (
        f"{len(in_flight)} entries in flight at the kill, {sum(ran_before.values())} handlers had run; "
        f"after recovery {len(twice)} handlers ran twice, {skipped} redeliveries were found "
        f"in the store and acknowledged without running"
    )
    print(f"kill -9 redelivery figures: {figures}")
    assert not more, f"handlers ran more than twice: {more}; {figures}"
    assert twice <= in_flight, f"an event not in flight at the kill ran twice; {figures}"
    assert twice <= set(ran_before), f"an event ran twice without having run before the kill; {figures}"
    assert len(twice) <= len(in_flight) - skipped, figures

    assert final["received"] == total
    assert final["processed"] == total
    assert final["reclaimed"] == len(in_flight), figures
    assert final["deadLettered"] == 0
    assert final["rejectedCompletions"] == 0
    cluster.stop(survivor)
    assert not survivor.log_events("leases lost to another worker"), "false alarm: it was alone"


@pytest.mark.timeout(90)
def test_sigterm_finishes_in_flight_handlers_and_stops_reading(
    cluster: Cluster, client: httpx.Client
) -> None:
    total, concurrency = 1000, 50
    # Every tenth handler takes 3 s, so some are surely in flight when the stop request comes:
    # with equal durations a whole read could finish together and leave nothing running.
    events = [{"type": "SLOW", "payload": {"ms": 3000 if i % 10 == 0 else 100, "n": i}} for i in range(total)]
    ids = post_batch(client, events)
    worker = cluster.start_worker(concurrency=concurrency)
    wait_for(
        lambda: sum(count_side_effects(cluster.side_file, "SLOW").values()) >= 100,
        "the worker to run 100 handlers",
        timeout=60,
        interval=0.005,
    )
    cluster.stop(worker, signal.SIGTERM)  # asserts exit code 0

    after = get_metrics(client)
    ran = count_side_effects(cluster.side_file, "SLOW")
    assert after["pending"] == 0, "every in-flight handler finished and its outcome was recorded"
    assert after["scheduled"] == 0
    assert after["processed"] == sum(ran.values()), "no handler ran without its outcome being recorded"
    assert after["processed"] + after["queued"] == total
    assert after["queued"] > 0, "the worker stopped reading"
    # After the stop request only the work in flight ran, plus the entries of a read that
    # was already waiting for Redis (they are this worker's): at most `concurrency` in all.
    [stopping] = worker.log_events("worker stopping")
    stop_at = datetime.fromisoformat(stopping["timestamp"]).timestamp()
    late = [e for e in side_effects(cluster.side_file) if e.kind == "SLOW" and e.at >= stop_at]
    assert 0 < stopping["in_flight"] <= concurrency
    assert len(late) <= concurrency, f"{len(late)} handlers finished after the stop request"
    [stopped] = worker.log_events("worker stopped")
    assert stopped["settled"] == after["processed"]

    nxt = cluster.start_worker(concurrency=concurrency, burst=True)
    assert cluster.wait_exit(nxt, timeout=60) == 0, nxt.logs()
    assert not nxt.log_events("leases lost to another worker"), "false alarm: it was alone"
    final = wait_drained(client, total, timeout=10)
    runs = count_side_effects(cluster.side_file, "SLOW")
    assert set(runs) == set(ids)
    twice = {k: v for k, v in runs.items() if v != 1}
    assert not twice, f"{len(twice)} events ran more than once after a graceful stop"
    assert final["processed"] == total
    assert final["reclaimed"] == 0
    assert final["redeliveredSkipped"] == 0
    assert final["rejectedCompletions"] == 0
    assert len({it["id"] for it in page_all(client, "/events")}) == total


@pytest.mark.timeout(60)
def test_handler_longer_than_the_visibility_timeout_runs_once(cluster: Cluster, client: httpx.Client) -> None:
    workers = cluster.start_workers(2, EVENTSTREAM_VISIBILITY_TIMEOUT="1")
    wait_for(lambda: get_metrics(client)["workers"] == 2, "both workers to beat their hearts", timeout=30)

    ids = post_batch(client, [{"type": "LONG", "payload": {"seconds": 3, "n": i}} for i in range(2)])
    wait_for(
        lambda: len(count_side_effects(cluster.side_file, "LONG_START")) == 2,
        "both long handlers to start",
        timeout=30,
    )
    for event_id in ids:
        r = client.get(f"/events/{event_id}")
        assert r.json()["status"] == "processing", r.json()
    # Meanwhile, a flow of short events: completions race with the lease renewals.
    quick = post_batch(client, [{"type": "OK", "payload": {"n": i}} for i in range(2000)])
    final = wait_drained(client, 2 + len(quick), timeout=60)

    assert count_side_effects(cluster.side_file, "LONG_START") == Counter(ids), "each handler started once"
    assert count_side_effects(cluster.side_file, "LONG") == Counter(ids), "each handler finished once"
    assert count_side_effects(cluster.side_file, "OK") == Counter(quick)
    assert final["processed"] == 2 + len(quick)
    assert final["reclaimed"] == 0, "a renewed lease must not be reclaimed"
    assert final["rejectedCompletions"] == 0
    assert final["redeliveredSkipped"] == 0
    for event_id in ids:
        r = client.get(f"/events/{event_id}")
        assert (r.json()["status"], r.json()["attempts"]) == ("processed", 1), r.json()
    for w in workers:
        cluster.stop(w)
        assert not w.log_events("leases lost to another worker"), f"false alarm in {w.name}"


@pytest.mark.timeout(60)
def test_sigterm_with_every_slot_blocked_stops_after_the_grace_period(
    cluster: Cluster, client: httpx.Client, tmp_path: Path
) -> None:
    gate = tmp_path / "gate-open"
    worker = cluster.start_worker(concurrency=1, EVENTSTREAM_SHUTDOWN_GRACE="1")
    [blocked, behind] = post_batch(
        client, [{"type": "GATE", "payload": {"gate": str(gate)}}, {"type": "OK", "payload": {}}]
    )
    wait_for(lambda: blocked in count_side_effects(cluster.side_file, "GATE_START"), "GATE to start")
    # The only slot is taken by a handler that will not finish: the stop must still
    # come, once the grace period is over, and not wait for a free slot first.
    cluster.stop(worker, signal.SIGTERM, timeout=20)
    assert "grace period over" in worker.stderr()
    m = get_metrics(client)
    assert (m["pending"], m["queued"], m["processed"]) == (1, 1, 0)

    gate.touch()
    nxt = cluster.start_worker(EVENTSTREAM_VISIBILITY_TIMEOUT="1")
    final = wait_drained(client, 2, timeout=30)
    assert final["processed"] == 2
    assert final["reclaimed"] == 1
    assert count_side_effects(cluster.side_file, "GATE") == Counter([blocked])
    assert count_side_effects(cluster.side_file, "OK") == Counter([behind])
    cluster.stop(nxt)
