"""The Procfile topology end to end: `eventstream procfile --workers 3` runs the repository's
Procfile (one API, three workers) against one Redis and one PostgreSQL database.

Everything is real: the session's private Redis, a throwaway PostgreSQL database, the
runner and the processes it starts (the Procfile's `release` entry migrates the empty
database first), events posted over HTTP and handled by
tests/support/apps/e2e.py (some succeed, some need retries, some die).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx

from eventstream.embedded import free_port
from tests.support.effects import side_effects
from tests.support.http import get_metrics, wait_drained
from tests.support.paths import REPO_ROOT
from tests.support.processes import Cluster, Proc
from tests.support.servers import PG
from tests.support.waiting import wait_for

OK, FLAKY, FAIL = 200, 60, 40  # FLAKY: two failures then success; FAIL: dead after 3 tries


def topology_env(cluster: Cluster, database_url: str, port: int) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)  # the Procfile's commands call `eventstream`
    return cluster.env(
        EVENTSTREAM_DATABASE_URL=database_url,
        EVENTSTREAM_BATCH_SIZE="10",  # small reads, so the work spreads over the workers
        EVENTSTREAM_CONCURRENCY="10",
        PORT=str(port),
        APP="tests.support.apps.e2e:app",
        PATH=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
    )


def wait_api(runner: Proc, port: int) -> None:
    def probe() -> bool:
        if not runner.alive():
            raise AssertionError(f"the runner exited with {runner.popen.returncode}:\n{runner.logs()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(probe, "the API of the topology to be ready", 60.0)


async def stored_ids(database: str) -> set[str]:
    conn = await asyncpg.connect(**PG, database=database, timeout=5)
    try:
        return {r["id"] for r in await conn.fetch("SELECT id FROM eventstream_events")}
    finally:
        await conn.close()


def test_procfile_runs_api_and_three_workers_end_to_end(cluster: Cluster, postgres_db: str) -> None:
    port = free_port()
    database_url = f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{postgres_db}"
    env = topology_env(cluster, database_url, port)
    runner = cluster.spawn(
        "procfile", ["procfile", "--file", str(REPO_ROOT / "Procfile"), "--workers", "3"], env
    )
    wait_api(runner, port)

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
        wait_for(lambda: get_metrics(client)["workers"] == 3, "three workers to report", 60.0)
        sent: dict[str, list[str]] = {"OK": [], "FLAKY": [], "FAIL": []}
        kinds = ["OK"] * OK + ["FLAKY"] * FLAKY + ["FAIL"] * FAIL
        plan = [kinds[j] for j in _interleaved(len(kinds))]
        for i, kind in enumerate(plan):
            r = client.post("/events", json={"type": kind, "payload": {"n": i}})
            assert r.status_code == 202, r.text
            sent[kind].append(r.json()["eventId"])

        m = wait_drained(client, len(plan), timeout=120.0)
        assert m["received"] == len(plan)
        assert m["received"] == m["processed"] + m["deadLettered"]
        assert (m["processed"], m["deadLettered"], m["dlq"]) == (OK + FLAKY, FAIL, FAIL)
        assert m["failed"] == 2 * FLAKY + 3 * FAIL
        assert m["duplicates"] == 0
        dead = {item["id"] for item in client.get("/failed-events", params={"limit": 1000}).json()["items"]}
        assert dead == set(sent["FAIL"])

    # all three workers took part, and each successful handler ran exactly once
    effects = side_effects(cluster.side_file)
    assert len({e.pid for e in effects}) == 3, Counter(e.pid for e in effects)
    done = Counter(e.event_id for e in effects if e.kind in ("OK", "FLAKY"))
    assert set(done) == set(sent["OK"]) | set(sent["FLAKY"])
    assert set(done.values()) == {1}

    # the processed events are rows in PostgreSQL
    assert asyncio.run(stored_ids(postgres_db)) == set(sent["OK"]) | set(sent["FLAKY"])

    # SIGTERM stops the whole topology cleanly
    runner.popen.send_signal(signal.SIGTERM)
    assert cluster.wait_exit(runner, timeout=60) == 0, runner.logs()
    log = runner.stderr()
    assert "release exited with code 0" in log  # the Procfile's `eventstream db upgrade`, first
    for label in ("api.1", "worker.1", "worker.2", "worker.3"):
        assert f"{label} stopped (exit code 0)" in log, log
    assert "worker stopped" in runner.stdout()
    assert cluster.marked_pids() == []


def _interleaved(n: int) -> list[int]:
    """0..n-1 in a stride order, so the kinds of events arrive mixed."""
    return sorted(range(n), key=lambda i: (i * 7919) % n)
