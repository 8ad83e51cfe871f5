"""Conservation across real processes: 3,000 mixed events, one API, two workers, on
one partition and on four of one server, and on twelve over a Redis Cluster's three
primaries.

Every accepted event must end processed or dead, exactly once, never both; the
metrics must agree with that truth; successful handlers' side effects happen once.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import httpx
import pytest
import redis

from tests.support.cli import run_cli
from tests.support.effects import side_effects
from tests.support.http import get_metrics, page_all, wait_drained
from tests.support.processes import Cluster
from tests.support.waiting import wait_for

TOTAL = 3_000
SINGLES = 300  # posted one by one; the rest in batches
BATCH = 100
# One cycle of ten events: what each type does is in tests/support/apps/e2e.py.
CYCLE = ["OK", "OK", "OK", "SYNC_OK", "FLAKY", "FLAKY", "FAIL", "PERM", "NOPE", "OK"]
SUCCEEDS = {"OK", "SYNC_OK", "FLAKY"}
DIES = {"FAIL", "PERM", "NOPE"}
EXPECTED_ATTEMPTS = {"OK": 1, "SYNC_OK": 1, "FLAKY": 3, "FAIL": 3, "PERM": 1}
INVALID = [
    {"type": "has space", "payload": {}},
    {"payload": {"no": "type"}},
    {"type": "OK", "payload": [1, 2]},
]


def _event(i: int) -> dict[str, Any]:
    return {"id": f"client-{i}", "type": CYCLE[i % len(CYCLE)], "payload": {"i": i}, "source": "e2e"}


LAYOUTS = {"one-partition": ("server", 1), "four-partitions": ("server", 4), "cluster": ("cluster", 12)}


@pytest.fixture(params=list(LAYOUTS))
def cluster(cluster: Cluster, request: pytest.FixtureRequest) -> Cluster:
    """Every process of the test with EVENTSTREAM_PARTITIONS set (1: the default layout),
    on the session's server or on its Redis Cluster (3 primaries, 3 replicas)."""
    where, partitions = LAYOUTS[request.param]
    if where == "cluster":
        cluster.redis_url = request.getfixturevalue("redis_cluster").url
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = str(partitions)
    return cluster


@pytest.mark.timeout(150)
def test_conservation_of_3000_mixed_events(
    cluster: Cluster, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    workers = cluster.start_workers(2)
    wait_for(lambda: get_metrics(client)["workers"] == 2, "both workers to start", timeout=60)
    events = [_event(i) for i in range(TOTAL)]
    accepted: dict[str, str] = {}  # client id -> event id
    kind_of: dict[str, str] = {}  # event id -> type

    def accept(client_id: str, event_id: str, event_type: str) -> None:
        assert client_id not in accepted, f"{client_id} accepted twice"
        accepted[client_id] = event_id
        kind_of[event_id] = event_type

    # Ingest: batches of 100 (one with invalid items mixed in), single posts in between,
    # half of the singles keyed by the Idempotency-Key header, half by the body id.
    singles = events[:SINGLES]
    batched = events[SINGLES:]
    for n, start in enumerate(range(0, len(batched), BATCH)):
        chunk = batched[start : start + BATCH]
        body = [*chunk[:50], *INVALID, *chunk[50:]] if n == 3 else chunk
        r = client.post("/events/batch", json={"events": body})
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["accepted"] == len(chunk)
        assert result["duplicates"] == 0
        assert result["rejected"] == len(body) - len(chunk)
        assert [item["index"] for item in result["results"]] == list(range(len(body)))
        for item, sent in zip(result["results"], body, strict=True):
            if sent in INVALID:
                assert item["status"] == 422, item
                assert "eventId" not in item, item
                continue
            assert item["status"] == 202, item
            assert item["duplicate"] is False, item
            accept(sent["id"], item["eventId"], sent["type"])
        for ev in singles[n * 12 : (n + 1) * 12]:
            if ev["payload"]["i"] % 2:
                r = client.post("/events", json={k: v for k, v in ev.items() if k != "id"},
                                headers={"Idempotency-Key": ev["id"]})  # fmt: skip
            else:
                r = client.post("/events", json=ev)
            assert r.status_code == 202, r.text
            assert r.json()["duplicate"] is False
            accept(ev["id"], r.json()["eventId"], ev["type"])
    assert len(accepted) == TOTAL
    assert len(kind_of) == TOTAL, "two accepted events share an event id"

    # Duplicates: re-post 50 already accepted events (a batch of 30, 20 single posts);
    # each answers 200/duplicate with the original event id and enqueues nothing.
    rng = random.Random(7)
    again = rng.sample(events, 50)
    r = client.post("/events/batch", json={"events": again[:30]})
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 30)
    for item, ev in zip(r.json()["results"], again[:30], strict=True):
        assert (item["status"], item["duplicate"]) == (200, True)
        assert item["eventId"] == accepted[ev["id"]]
    for ev in again[30:]:
        r = client.post("/events", json=ev)
        assert r.status_code == 200, r.text
        assert r.json() == {"message": r.json()["message"], "eventId": accepted[ev["id"]], "duplicate": True}

    metrics = wait_drained(client, TOTAL, timeout=100)

    # The truth, from the API: the store (processed) and the DLQ (dead).
    processed_items = page_all(client, "/events")
    dead_items = page_all(client, "/failed-events")
    processed_ids = [it["id"] for it in processed_items]
    dead_ids = [it["id"] for it in dead_items]
    dup_processed = [i for i, c in Counter(processed_ids).items() if c > 1]
    dup_dead = [i for i, c in Counter(dead_ids).items() if c > 1]
    assert not dup_processed, f"{len(dup_processed)} events listed twice as processed"
    assert not dup_dead, f"{len(dup_dead)} events listed twice in the DLQ"
    processed, dead = set(processed_ids), set(dead_ids)
    assert not processed & dead, f"{len(processed & dead)} events both processed and dead"
    all_ids = set(kind_of)
    assert not (processed | dead) - all_ids, "the store or DLQ holds events nobody accepted"
    missing = all_ids - processed - dead
    assert not missing, f"{len(missing)} accepted events are neither processed nor dead"
    assert processed == {i for i, t in kind_of.items() if t in SUCCEEDS}
    assert dead == {i for i, t in kind_of.items() if t in DIES}

    for it in processed_items:
        assert it["status"] == "processed"
        assert it["attempts"] == EXPECTED_ATTEMPTS[it["type"]], it
        assert it["type"] == kind_of[it["id"]]
        assert it["processedAt"]
    for it in dead_items:
        t = kind_of[it["id"]]
        assert it["type"] == t
        assert it["failedAt"]
        if t == "NOPE":
            assert "NoHandler" in it["reason"], it
        else:
            assert it["attempts"] == EXPECTED_ATTEMPTS[t], it
        if t == "FAIL":
            assert "always fails (gave up after 3 attempts)" in it["reason"], it
        if t == "PERM":
            assert "PermanentError" in it["reason"], it

    # GET /events/{id} agrees, for a sample of each outcome.
    for event_id in rng.sample(sorted(processed), 25) + rng.sample(sorted(dead), 25):
        r = client.get(f"/events/{event_id}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == ("processed" if event_id in processed else "dead"), r.json()

    # The metrics agree with the truth.
    by_type = Counter(kind_of.values())
    assert metrics["received"] == TOTAL
    assert metrics["processed"] == len(processed)
    assert metrics["deadLettered"] == len(dead)
    assert metrics["dlq"] == len(dead)
    assert metrics["duplicates"] == 50
    assert metrics["failed"] == 2 * by_type["FLAKY"] + 3 * by_type["FAIL"] + by_type["PERM"]
    assert metrics["retried"] == 2 * by_type["FLAKY"] + 2 * by_type["FAIL"]
    assert metrics["reclaimed"] == 0
    assert metrics["rejectedCompletions"] == 0
    assert metrics["redeliveredSkipped"] == 0
    assert metrics["queued"] == metrics["pending"] == metrics["scheduled"] == 0

    # Side effects: each successful handler ran once per event; each try happened once.
    lines = side_effects(cluster.side_file)
    per_try = Counter((e.kind, e.event_id, e.attempt) for e in lines)
    twice = {k: c for k, c in per_try.items() if c > 1}
    assert not twice, f"{len(twice)} handler tries ran more than once, e.g. {list(twice.items())[:5]}"
    done = Counter(e.event_id for e in lines if e.kind in SUCCEEDS)
    assert set(done) == processed
    assert set(done.values()) == {1}
    tries = Counter(e.kind for e in lines)
    assert tries["FLAKY_TRY"] == 3 * by_type["FLAKY"]
    assert tries["FAIL_TRY"] == 3 * by_type["FAIL"]
    assert tries["PERM_TRY"] == by_type["PERM"]
    pids = {e.pid for e in lines}
    assert pids <= {w.pid for w in workers}
    assert len(pids) == 2, "both worker processes should have run handlers"

    for w in workers:
        cluster.stop(w)
        # No lease can be lost with a 30 s visibility timeout: no false alarm either.
        assert not w.log_events("leases lost to another worker"), w.name
    assert get_metrics(client)["processed"] == len(processed)

    # The audit agrees with the metrics, partition by partition.
    run = run_cli("audit", "--json", env=cluster.env())
    assert run.code == 0, run.stderr
    audit = json.loads(run.stdout)
    assert audit["ok"] is True, audit["problems"]
    assert (audit["received"], audit["processed"], audit["dlq"]) == (TOTAL, len(processed), len(dead))
    partitions = int(cluster.settings_env["EVENTSTREAM_PARTITIONS"])
    assert len(audit.get("partitions", [None])) == partitions
    if partitions > 1:
        assert all(p["ok"] and p["received"] > 0 for p in audit["partitions"]), audit["partitions"]
    if "redis_cluster" in request.fixturenames:
        # the twelve partitions spread over the three primaries: each holds some
        for node in request.getfixturevalue("redis_cluster").primaries():
            with redis.Redis(port=node.port, decode_responses=True) as r:
                held = list(r.scan_iter(match=f"{{{cluster.prefix}#*", count=1000))
            assert held, f"primary {node.port} holds no partition"
