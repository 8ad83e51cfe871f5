"""PostgreSQL connections cut mid-statement under load: the worker backs off and goes on,
the API answers 503 (never 500), and once the cuts stop every accepted event is processed
exactly once.

Real processes (tests/e2e): an API and a worker whose store is a throwaway PostgreSQL
database reached through the fault proxy (tests/support/proxy.py). For each cut the test
takes an ACCESS EXCLUSIVE lock on the events table from a connection of its own (not
through the proxy) and waits until both a worker's INSERT and an API's SELECT are waiting
on it, so that each cut lands inside a statement; it then resets every proxied
connection and lets the lock go.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar, cast

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from tests.support.http import metrics
from tests.support.outcomes import Poster, assert_conserved, settle_truth
from tests.support.processes import Cluster, Proc
from tests.support.proxy import PASS, RESET, FaultProxy
from tests.support.servers import PG
from tests.support.waiting import wait_for

T = TypeVar("T")
CUTS = 5
FATAL = "cannot record outcomes; stopping"
RETRYING = "backing service unavailable, retrying"


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    """The fault proxy in front of the local PostgreSQL server."""
    p = FaultProxy(cast(int, PG["port"]), str(PG["host"])).start()
    yield p
    p.close()


class Direct:
    """Two connections of the test's own, straight to the database (not through the proxy):
    one holds the lock, the other watches who waits for it."""

    def __init__(self, database: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.locker = self.run(asyncpg.connect(**PG, database=database, timeout=5))
        self.watcher = self.run(asyncpg.connect(**PG, database=database, timeout=5))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def waiting(self) -> list[str]:
        """The statements of other backends waiting for a lock on this database."""
        rows = self.run(
            self.watcher.fetch(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
            )
        )
        return [str(r["query"]) for r in rows]

    def close(self) -> None:
        self.run(self.locker.close())
        self.run(self.watcher.close())
        self.loop.close()


class Reader:
    """GET /events in a loop from a thread; counts every answer's status (None: no answer),
    and keeps what came with each answer other than a 200 or a 503 with Retry-After."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int | None] = Counter()
        self.odd: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive(), "the reader did not stop"

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    r = client.get("/events", params={"limit": 20})
                except httpx.TransportError as exc:
                    self.statuses[None] += 1
                    self.odd.append(f"no answer: {exc!r}")
                    continue
                self.statuses[r.status_code] += 1
                if r.status_code != 200 and (r.status_code != 503 or "retry-after" not in r.headers):
                    self.odd.append(f"{r.status_code}: {r.text[:300]}")


def cut_mid_statement(db: Direct, proxy: FaultProxy, worker: Proc) -> list[str]:
    """Lock the table, wait for a worker's INSERT (while the worker lives) and an API's
    SELECT to wait on the lock, reset every proxied connection, release; returns the
    statements that were cut."""
    tx = db.locker.transaction()
    db.run(tx.start())
    try:
        db.run(db.locker.execute("LOCK TABLE eventstream_events IN ACCESS EXCLUSIVE MODE"))

        def both_waiting() -> list[str] | None:
            queries = db.waiting()
            writing = any(q.startswith("INSERT") for q in queries) or not worker.alive()
            reading = any(q.startswith("SELECT") for q in queries)
            return queries if writing and reading else None

        cut = wait_for(both_waiting, "a write and a read to wait for the lock", 10.0, 0.01, db.waiting)
        proxy.set(RESET)
        proxy.set(PASS)
    finally:
        db.run(tx.rollback())
    return cut


@pytest.mark.timeout(120)
def test_store_connections_cut_mid_statement_under_load(
    postgres_db: str, cluster: Cluster, pg_proxy: FaultProxy
) -> None:
    url = f"postgresql+asyncpg://{PG['user']}@127.0.0.1:{pg_proxy.port}/{postgres_db}"
    upgrade = cluster.spawn("db", ["db", "upgrade"], cluster.env(EVENTSTREAM_DATABASE_URL=url))
    assert cluster.wait_exit(upgrade) == 0, upgrade.logs()
    api = cluster.start_api(EVENTSTREAM_DATABASE_URL=url)
    worker = cluster.start_worker(concurrency=20, EVENTSTREAM_DATABASE_URL=url)
    client = httpx.Client(base_url=api.url, timeout=30.0)
    db = Direct(postgres_db)
    poster = Poster(api.url).start()
    reader = Reader(api.url).start()
    cut: list[list[str]] = []
    try:
        wait_for(lambda: metrics(client)["processed"] >= 50, "the worker to process events", 20.0)
        for _ in range(CUTS):
            cut.append(cut_mid_statement(db, pg_proxy, worker))
            time.sleep(1.0)  # the load goes on between the cuts
    finally:
        posts = poster.stop()
        reader.stop()
        db.close()

    problems = []
    if not worker.alive():
        problems.append(f"the worker exited with code {worker.popen.returncode}")
    fatal = worker.log_events(FATAL)
    if fatal:
        problems.append(f"the worker logged {FATAL!r}: {str(fatal[0].get('error'))[:160]}")
    bad_posts = Counter(
        p.status for p in posts if p.status is None or not (200 <= p.status < 300 or p.status == 503)
    )
    if bad_posts:
        details = [p.detail for p in posts if p.status is not None and p.status >= 500 and p.status != 503]
        problems.append(f"POST /events answers other than 2xx or 503: {dict(bad_posts)} {details[:2]}")
    if reader.odd:
        bad_gets = {s: n for s, n in reader.statuses.items() if s not in (200, 503)}
        problems.append(
            f"GET /events answers other than 200 or 503 with Retry-After: {bad_gets} {reader.odd[:2]}"
        )
    assert not problems, "\n".join(problems)

    # the cuts landed inside statements of both processes
    retried = [r for r in worker.log_events(RETRYING) if r.get("op") == "write_rows"]
    assert retried, "no write of the worker was cut"
    assert reader.statuses[503] >= 1, "no read of the API was cut"

    truth = settle_truth(cluster, client, sum(1 for p in posts if p.event_id), timeout=60)
    counts = assert_conserved(posts, truth)
    assert counts["duplicate_side_effects"] <= counts["reclaimed"], counts
    assert worker.alive()
    cluster.stop(worker)
    cluster.stop(api.proc)
    client.close()
    print(
        f"\nstore cuts: {len(cut)}, statements cut in each {[len(c) for c in cut]}; proxy "
        f"{dict(pg_proxy.stats)}; GET /events {dict(reader.statuses)}; POST /events "
        f"{dict(Counter(p.status for p in posts))}; worker writes retried {len(retried)}; {counts}"
    )
