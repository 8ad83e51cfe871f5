"""The SQL store locked: outcomes cannot be recorded, so nothing is acknowledged; once the
lock goes, everything completes, each event once."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.support.effects import count_side_effects
from tests.support.http import metrics, page
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


def post_ok(client: httpx.Client, first: int, count: int) -> list[str]:
    r = client.post(
        "/events/batch", json={"events": [{"type": "OK", "payload": {"n": first + i}} for i in range(count)]}
    )
    assert r.status_code == 200, r.text
    return [item["eventId"] for item in r.json()["results"]]


@pytest.mark.timeout(120)
def test_locked_sqlite_store_holds_acknowledgements_until_released(cluster: Cluster) -> None:
    api = cluster.start_api()
    # a short visibility timeout: the worker must keep renewing its leases while it waits
    worker = cluster.start_worker(concurrency=50, EVENTSTREAM_VISIBILITY_TIMEOUT="2")
    client = httpx.Client(base_url=api.url, timeout=30.0)
    ids = post_ok(client, 0, 20)
    wait_for(lambda: metrics(client)["processed"] == 20, "the first events to be processed")

    db = sqlite3.connect(cluster.data_dir / "events.db", isolation_level=None, timeout=10)
    db.execute("BEGIN EXCLUSIVE")
    locked_at = time.monotonic()
    try:
        ids += post_ok(client, 20, 30)
        # the handlers run, but their outcomes cannot be stored, so none is acknowledged
        wait_for(
            lambda: sum(count_side_effects(cluster.side_file, "OK").values()) == 50,
            "the handlers of the new events to run",
        )
        samples = []
        while time.monotonic() - locked_at < 3.0:  # longer than the visibility timeout
            m = metrics(client)
            samples.append((m["processed"], m["pending"], m["reclaimed"]))
            time.sleep(0.2)
        assert {s[0] for s in samples} == {20}, "nothing is acknowledged while the store is locked"
        assert samples[-1][1] == 30, "the events stay pending (in flight) in Redis"
        assert {s[2] for s in samples} == {0}, "the worker kept its leases: nothing was reclaimed"
    finally:
        db.execute("COMMIT")
        db.close()
    released_at = time.monotonic()

    wait_for(lambda: metrics(client)["processed"] == 50, "the events to complete once the lock is gone")
    completed_s = time.monotonic() - released_at
    m = metrics(client)
    assert m["queued"] + m["pending"] + m["scheduled"] == 0
    stored = [it["id"] for it in page(client, "/events")]
    assert sorted(stored) == sorted(ids), "every event stored exactly once"
    runs = count_side_effects(cluster.side_file, "OK")
    assert set(runs.values()) == {1}, "no handler ran twice"
    assert m["rejectedCompletions"] == 0
    cluster.stop(worker)
    print(f"\nsqlite locked {released_at - locked_at:.1f}s: 30 events held pending; completed "
          f"{completed_s:.2f}s after the release")  # fmt: skip
    client.close()
