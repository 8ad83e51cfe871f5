"""The audit: check the conservation law and find anything stranded, from the counters
and the real contents of Redis and the store.

Every accepted event is in exactly one place, so at any instant

    received == processed + dlq + deleted + queued + pending + scheduled

where ``queued + pending`` is the stream's length, ``scheduled`` the retry set's size
and ``dlq`` the dead-letter stream's length (read together in one MULTI, so the
equation holds exactly even while workers run). The store's row count is checked
against the ``processed`` counter. Beyond the sums, a walk over the contents finds
stranded work and misplaced events (problems.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from eventstream.broker import Broker
from eventstream.ops.problems import Problem, Walk
from eventstream.store import SqlStore

__all__ = ["AuditReport", "Problem", "audit"]

CHUNK = 500
EXAMPLES = 5
OVERDUE_AFTER_MS = 60_000


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What the audit saw. ``ok`` when the law holds and nothing is stranded."""

    at_ms: int
    received: int
    processed: int
    dlq: int
    deleted: int
    queued: int
    pending: int
    scheduled: int
    store_processed: int
    live_in_store: int  # live entries whose rows are written (settling now, or stranded)
    problems: tuple[Problem, ...] = field(default=())

    @property
    def accounted(self) -> int:
        return self.processed + self.dlq + self.deleted + self.queued + self.pending + self.scheduled

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": self.at_ms,
            "received": self.received,
            "accounted": self.accounted,
            "processed": self.processed,
            "dlq": self.dlq,
            "deleted": self.deleted,
            "queued": self.queued,
            "pending": self.pending,
            "scheduled": self.scheduled,
            "storeProcessed": self.store_processed,
            "liveInStore": self.live_in_store,
            "problems": [p.to_json() for p in self.problems],
        }


async def audit(
    broker: Broker,
    store: SqlStore,
    now_ms: int,
    *,
    visibility_timeout_ms: int,
    stale_after_ms: int | None = None,
    overdue_after_ms: int = OVERDUE_AFTER_MS,
    examples: int = EXAMPLES,
    chunk: int = CHUNK,
) -> AuditReport:
    """Audit one deployment (the broker's key prefix) against its store."""
    sums = await broker.reads.sums()
    store_count = await store.count()
    walk = Walk(
        broker,
        store,
        now_ms,
        vt_ms=visibility_timeout_ms,
        stale_ms=stale_after_ms if stale_after_ms is not None else 3 * visibility_timeout_ms,
        overdue_ms=overdue_after_ms,
        examples=examples,
        chunk=chunk,
    )
    found = await walk.run()

    counters, pending, scheduled, dlq = sums.counters, sums.pending, sums.scheduled, sums.dlq
    received = counters.get("received", 0)
    processed = counters.get("processed", 0)
    deleted = counters.get("deleted", 0)
    report = AuditReport(
        at_ms=now_ms,
        received=received,
        processed=processed,
        dlq=dlq,
        deleted=deleted,
        queued=max(sums.length - pending, 0),
        pending=pending,
        scheduled=scheduled,
        store_processed=store_count,
        live_in_store=walk.live_in_store,
    )
    problems: list[Problem] = []
    if report.accounted != received:
        diff = report.accounted - received
        problems.append(
            Problem(
                "conservation",
                abs(diff),
                f"received {received} != processed {processed} + dlq {dlq} + deleted {deleted} "
                f"+ queued {report.queued} + pending {pending} + scheduled {scheduled} "
                f"= {report.accounted} ({diff:+d}): events were "
                + ("counted twice or appeared without being received" if diff > 0 else "lost"),
            )
        )
    # Rows are written before the completion is counted, so the store may lead the
    # counter by exactly the live entries whose rows exist, and by nothing else.
    expected = processed + report.live_in_store
    if store_count != expected:
        diff = store_count - expected
        problems.append(
            Problem(
                "store_vs_processed",
                abs(diff),
                f"the store holds {store_count} processed events but the processed counter is "
                f"{processed}"
                + (f" (+{report.live_in_store} live with rows)" if report.live_in_store else "")
                + f" ({diff:+d}): "
                + ("rows without a recorded completion" if diff > 0 else "completions without a row"),
            )
        )
    return replace(report, problems=(*problems, *found))
