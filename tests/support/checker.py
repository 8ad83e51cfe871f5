"""A reusable checker for fault tests: what was sent, what became of it, what is wrong.

Every event the checker sends carries a unique ``payload.token``, so its fate can be
found in the store and the DLQ even when the answer to its POST never arrived. Each
send is recorded as

- accepted: a 2xx answer with an event id;
- rejected: a 4xx or 503 answer (must never be processed);
- unknown:  a timeout or a broken connection (may or may not have been accepted).

``drain()`` polls ``GET /metrics`` (JSON) until nothing is queued, in flight or scheduled,
within a deadline. ``verify()`` then reads the truth — the store's rows (the SQLite file
read directly), the DLQ (XRANGE), the handlers' side-effect file and side table, the
counters — runs the audit (eventstream.ops.audit), and returns a :class:`Verdict`:

- lost: accepted but neither processed nor dead;
- unexpected: processed or dead but never sent (or with an id other than the one the
  API answered);
- rejected_processed: answered 4xx/503 and yet processed or dead;
- processed_and_dead: in the store and in the DLQ;
- duplicates: per effect kind, the event ids whose effect appears more than once while
  their completion is recorded once (the store keeps one row per id);
- stranded: the audit's problems;
- metrics_mismatch: /metrics figures that differ from the truth.

``Verdict.assert_ok(idempotent=...)`` asserts all of these are empty, duplicates aside
for plain handlers (reported, not asserted: that is the at-least-once window), and 0
duplicates for the idempotent kinds.

Recovery: ``pending_of(pid)`` lists the entries a worker process holds (its consumer
name embeds the pid), ``wait_settled(entries)`` waits until none of them is pending any
more and returns how long that took.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from eventstream.broker import Broker, connect
from eventstream.broker.keys import GROUP, Keys
from eventstream.ops.audit import AuditReport, audit
from eventstream.store import create_store
from tests.support.effects import side_effects
from tests.support.http import get_metrics, live
from tests.support.processes import Cluster
from tests.support.waiting import wait_for

UNKNOWN = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass
class Sent:
    token: str
    type: str
    outcome: str  # accepted | rejected | unknown
    event_id: str | None = None
    status: int | None = None


@dataclass
class Verdict:
    accepted: int
    rejected: int
    unknown: int
    processed: int
    dead: int
    lost: list[str]
    unexpected: list[str]
    rejected_processed: list[str]
    processed_and_dead: list[str]
    duplicates: dict[str, list[str]]  # effect kind -> event ids with the effect applied > once
    runs: dict[str, Counter[str]]  # effect kind -> runs per event id
    stranded: list[str]
    metrics_mismatch: dict[str, tuple[int, int]]  # name -> (metrics, truth)
    metrics: dict[str, int]
    audit: AuditReport

    @property
    def redeliveries(self) -> int:
        """Deliveries taken over from a worker whose lease expired (kill, stop, hang)."""
        return self.metrics.get("reclaimed", 0)

    def summary(self) -> str:
        dups = {k: len(v) for k, v in self.duplicates.items()}
        m = self.metrics
        return (
            f"accepted {self.accepted}, rejected {self.rejected}, unknown {self.unknown}; "
            f"processed {self.processed}, dead {self.dead}; lost {len(self.lost)}, "
            f"unexpected {len(self.unexpected)}, rejected-but-processed {len(self.rejected_processed)}, "
            f"processed-and-dead {len(self.processed_and_dead)}, stranded {len(self.stranded)}, "
            f"metrics mismatches {self.metrics_mismatch}; duplicate effects {dups}; "
            f"reclaimed {m.get('reclaimed', 0)}, redeliveredSkipped {m.get('redeliveredSkipped', 0)}, "
            f"rejectedCompletions {m.get('rejectedCompletions', 0)}"
        )

    def assert_ok(self, idempotent: tuple[str, ...] = ()) -> None:
        s = self.summary()
        assert not self.lost, f"lost events {self.lost[:10]}; {s}"
        assert not self.unexpected, f"unexpected events {self.unexpected[:10]}; {s}"
        assert not self.rejected_processed, f"rejected yet processed {self.rejected_processed[:10]}; {s}"
        assert not self.processed_and_dead, f"processed and dead {self.processed_and_dead[:10]}; {s}"
        assert not self.stranded, f"stranded: {self.stranded}; {s}"
        assert not self.metrics_mismatch, f"/metrics differ from the truth: {self.metrics_mismatch}; {s}"
        for kind in idempotent:
            assert kind in self.runs, f"no {kind} handler ran; {s}"
            assert not self.duplicates.get(kind), f"idempotent {kind} applied twice: {s}"


class Checker:
    """Sends events through a real API and checks what became of them."""

    def __init__(self, cluster: Cluster, api_url: str, *, timeout: float = 5.0) -> None:
        self.cluster = cluster
        self.api_url = api_url
        self.keys = Keys(cluster.prefix)
        self.timeout = timeout
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._loaders: list[tuple[threading.Thread, threading.Event]] = []

    # ---- sending -------------------------------------------------------------------

    def _record(self, sent: list[Sent]) -> list[Sent]:
        with self._lock:
            self.sent += sent
        return sent

    def send(self, client: httpx.Client, type_: str, **payload: Any) -> Sent:
        """POST one event; classify the answer."""
        token = uuid.uuid4().hex
        try:
            r = client.post("/events", json={"type": type_, "payload": {"token": token, **payload}})
        except UNKNOWN:
            return self._record([Sent(token, type_, "unknown")])[0]
        if 200 <= r.status_code < 300 and "eventId" in r.json():
            return self._record([Sent(token, type_, "accepted", r.json()["eventId"], r.status_code)])[0]
        if 400 <= r.status_code < 500 or r.status_code == 503:
            return self._record([Sent(token, type_, "rejected", None, r.status_code)])[0]
        raise AssertionError(f"POST /events answered {r.status_code}: {r.text}")

    def send_batch(self, client: httpx.Client, type_: str, n: int, **payload: Any) -> list[Sent]:
        """POST /events/batch of n events; each item classified on its own."""
        tokens = [uuid.uuid4().hex for _ in range(n)]
        body = {"events": [{"type": type_, "payload": {"token": t, **payload}} for t in tokens]}
        try:
            r = client.post("/events/batch", json=body)
        except UNKNOWN:
            return self._record([Sent(t, type_, "unknown") for t in tokens])
        if r.status_code == 503 or 400 <= r.status_code < 500:
            return self._record([Sent(t, type_, "rejected", None, r.status_code) for t in tokens])
        assert r.status_code == 200, r.text
        out = []
        for t, item in zip(tokens, r.json()["results"], strict=True):
            if "eventId" in item:
                out.append(Sent(t, type_, "accepted", item["eventId"], 202))
            else:
                out.append(Sent(t, type_, "rejected", None, int(item.get("status", 422))))
        return self._record(out)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=self.timeout)

    def start_load(
        self, make: Callable[[int], tuple[str, dict[str, Any]]], batch: int = 10, pause: float = 0.01
    ) -> None:
        """Post batches from a background thread until ``stop_load``; ``make(i)`` gives the
        type and payload of the i-th batch."""
        stop = threading.Event()

        def run() -> None:
            i = 0
            with self.client() as c:
                while not stop.is_set():
                    type_, payload = make(i)
                    self.send_batch(c, type_, batch, **payload)
                    i += 1
                    stop.wait(pause)

        thread = threading.Thread(target=run, name="load", daemon=True)
        thread.start()
        self._loaders.append((thread, stop))

    def stop_load(self) -> None:
        for thread, stop in self._loaders:
            stop.set()
            thread.join(30)
            assert not thread.is_alive(), "the load thread did not stop"
        self._loaders.clear()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(s.outcome for s in self.sent)

    # ---- draining ------------------------------------------------------------------

    def drain(self, timeout: float = 60.0) -> dict[str, int]:
        """Poll /metrics until every accepted event is counted and none is live."""
        accepted = self.counts()["accepted"]
        seen: dict[str, int] = {}
        with self.client() as c:

            def probe() -> dict[str, int] | None:
                nonlocal seen
                seen = get_metrics(c)
                return seen if seen["received"] >= accepted and live(seen) == 0 else None

            return wait_for(probe, "the drain", timeout, 0.05, last=lambda: seen)

    # ---- recovery ------------------------------------------------------------------

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.cluster.redis_url, decode_responses=True)

    def pending_of(self, pid: int) -> list[str]:
        """Stream entries pending for the worker process ``pid`` (consumer host-PID-xxxxxx)."""
        with self.redis() as r:
            rows = r.xpending_range(self.keys.stream, GROUP, min="-", max="+", count=100_000)
        return [row["message_id"] for row in rows if f"-{pid}-" in row["consumer"]]

    def wait_settled(self, entries: list[str], since: float, timeout: float = 30.0) -> float:
        """Wait until none of ``entries`` is pending; seconds from ``since`` (monotonic).

        ``self.last_takeover_s`` is set to when none of them was held by its first owner
        any more (taken over by another worker, or settled)."""
        owners: dict[str, str] = {}
        self.last_takeover_s: float | None = None
        with self.redis() as r:

            def probe() -> bool:
                with r.pipeline(transaction=False) as pipe:
                    for e in entries:
                        pipe.xpending_range(self.keys.stream, GROUP, min=e, max=e, count=1)
                    rows = pipe.execute()
                held = [row[0]["consumer"] for row in rows if row]
                for e, row in zip(entries, rows, strict=True):
                    if row:
                        owners.setdefault(e, row[0]["consumer"])
                if self.last_takeover_s is None and not any(
                    row and row[0]["consumer"] == owners.get(e) for e, row in zip(entries, rows, strict=True)
                ):
                    self.last_takeover_s = time.monotonic() - since
                return not held

            wait_for(probe, f"{len(entries)} entries to be settled", timeout, 0.005)
        return time.monotonic() - since

    # ---- the verdict ---------------------------------------------------------------

    def store_rows(self) -> dict[str, str]:
        """event id -> payload token of every processed event (the store, read directly)."""
        path = self.cluster.data_dir / "events.db"
        if not path.exists():
            return {}
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
            rows = db.execute("SELECT id, payload FROM eventstream_events").fetchall()
        return {i: json.loads(p).get("token", "") for i, p in rows}

    def dead_rows(self) -> dict[str, str]:
        """event id -> payload token of every event in the DLQ."""
        out: dict[str, str] = {}
        with self.redis() as r:
            low = "-"
            while True:
                part = r.xrange(self.keys.dlq, min=low, max="+", count=1000)
                for _, f in part:
                    out[f["id"]] = json.loads(f["e"]).get("payload", {}).get("token", "")
                if len(part) < 1000:
                    return out
                low = f"({part[-1][0]}"

    def run_audit(self, visibility_timeout_ms: int = 1000) -> AuditReport:
        async def go() -> AuditReport:
            client = await connect(self.cluster.redis_url)
            store = create_store(f"sqlite+aiosqlite:///{self.cluster.data_dir / 'events.db'}")
            try:
                return await audit(
                    Broker(client, self.keys),
                    store,
                    time.time_ns() // 1_000_000,
                    visibility_timeout_ms=visibility_timeout_ms,
                )
            finally:
                await store.close()
                await client.aclose()

        return asyncio.run(go())

    def verify(self, visibility_timeout_ms: int = 1000) -> Verdict:
        with self.client() as c:
            metrics = get_metrics(c)
        processed = self.store_rows()
        dead = self.dead_rows()
        with self._lock:
            sent = list(self.sent)
        by_token = {s.token: s for s in sent}

        lost = [
            s.event_id or s.token
            for s in sent
            if s.outcome == "accepted" and s.event_id not in processed and s.event_id not in dead
        ]
        seen = {**dead, **processed}
        unexpected, rejected_processed = [], []
        unknown_in = 0
        for event_id, token in seen.items():
            s = by_token.get(token)
            if s is None or (s.outcome == "accepted" and s.event_id != event_id):
                unexpected.append(event_id)
            elif s.outcome == "rejected":
                rejected_processed.append(event_id)
            elif s.outcome == "unknown":
                unknown_in += 1
        both = sorted(set(processed) & set(dead))

        effects = side_effects(self.cluster.side_file)
        runs: dict[str, Counter[str]] = {}
        for e in effects:
            runs.setdefault(e.kind, Counter())[e.event_id] += 1
        duplicates = {
            kind: sorted(i for i, n in counter.items() if n > 1 and i in processed)
            for kind, counter in runs.items()
            if not kind.endswith(("_RUN", "_TRY"))
        }

        report = self.run_audit(visibility_timeout_ms)
        stranded = [f"{p.code}: {p.count} ({', '.join(p.examples)})" for p in report.problems]

        accepted = sum(1 for s in sent if s.outcome == "accepted")
        truth = {
            "received": accepted + unknown_in,
            "processed": len(processed),
            "dlq": len(dead),
            "queued": 0,
            "pending": 0,
            "scheduled": 0,
        }
        mismatch = {k: (metrics[k], v) for k, v in truth.items() if metrics[k] != v}
        return Verdict(
            accepted=accepted,
            rejected=sum(1 for s in sent if s.outcome == "rejected"),
            unknown=sum(1 for s in sent if s.outcome == "unknown"),
            processed=len(processed),
            dead=len(dead),
            lost=lost,
            unexpected=unexpected,
            rejected_processed=rejected_processed,
            processed_and_dead=both,
            duplicates=duplicates,
            runs=runs,
            stranded=stranded,
            metrics_mismatch=mismatch,
            metrics=metrics,
            audit=report,
        )


@dataclass
class Figures:
    """Figures a scenario measured, printed at the end of the test (pytest -s shows them)."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)

    def report(self, path: Path | None = None) -> str:
        line = f"GUARANTEES {self.name}: " + ", ".join(f"{k}={v}" for k, v in self.values.items())
        print(line)
        if path is not None:
            with path.open("a") as f:
                f.write(line + "\n")
        return line


def figures_file() -> Path | None:
    """Where ``Figures.report`` appends its line too: ``GUARANTEES_FILE``, when set."""
    path = os.environ.get("GUARANTEES_FILE")
    return Path(path) if path else None
