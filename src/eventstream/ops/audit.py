"""The audit: check the conservation law and find anything stranded, from the counters
and the real contents of Redis and the store.

Every accepted event is in exactly one place, so at any instant

    received == processed + dlq + deleted + queued + pending + scheduled + parked

where ``queued + pending`` is the stream's length, ``scheduled`` the retry set's size,
``parked`` the events waiting behind their ordering key's busy events, and ``dlq`` the
dead-letter stream's length (read together in one MULTI, so the
equation holds exactly even while workers run). The store's row count is checked
against the ``processed`` counter. Beyond the sums, a walk over the contents finds
stranded work and misplaced events (problems.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from eventstream.broker import Broker
from eventstream.broker.reads import Sums
from eventstream.ops.problems import Problem, Walk, merged
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
    partition: int | None = None  # set on one partition's share of the sums
    partitions: tuple[AuditReport, ...] = ()  # each partition's sums, when there are several
    parked: int = 0  # waiting behind their ordering key's busy events

    @property
    def accounted(self) -> int:
        return (
            self.processed
            + self.dlq
            + self.deleted
            + self.queued
            + self.pending
            + self.scheduled
            + self.parked
        )

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": self.at_ms,
            **self._sums(),
            "storeProcessed": self.store_processed,
            "liveInStore": self.live_in_store,
            "problems": [p.to_json() for p in self.problems],
            **({"partitions": [p.share_json() for p in self.partitions]} if self.partitions else {}),
        }

    def share_json(self) -> dict[str, Any]:
        """A partition's share: its sums and whether they obey the law."""
        return {"partition": self.partition, "ok": self.accounted == self.received, **self._sums()}

    def _sums(self) -> dict[str, int]:
        return {
            "received": self.received,
            "accounted": self.accounted,
            "processed": self.processed,
            "dlq": self.dlq,
            "deleted": self.deleted,
            "queued": self.queued,
            "pending": self.pending,
            "scheduled": self.scheduled,
            "parked": self.parked,
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
    """Audit one deployment (the broker's key prefix, all its partitions) against its store."""
    parts = broker.partitions
    sums = await asyncio.gather(*(p.reads.sums() for p in parts))
    store_count = await store.count()
    found: list[list[Problem]] = []
    live_in_store = 0
    for part in parts:
        walk = Walk(
            broker,
            part.reads,
            store,
            now_ms,
            vt_ms=visibility_timeout_ms,
            stale_ms=stale_after_ms if stale_after_ms is not None else 3 * visibility_timeout_ms,
            overdue_ms=overdue_after_ms,
            examples=examples,
            chunk=chunk,
        )
        found.append(await walk.run(reports=part.index == 0))
        live_in_store += walk.live_in_store

    shares = tuple(_share(part.index, s) for part, s in zip(parts, sums, strict=True))
    total = _total(shares)
    report = replace(
        total,
        at_ms=now_ms,
        store_processed=store_count,
        live_in_store=live_in_store,
        partitions=shares if len(shares) > 1 else (),
    )
    # The total obeys the law when every partition does (events never change partition):
    # a broken law is reported where it broke.
    problems: list[Problem] = [
        problem for share in report.partitions or (report,) if (problem := _conservation(share)) is not None
    ]
    processed = report.processed
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
    return replace(report, problems=(*problems, *merged(found, examples)))


def _share(index: int, sums: Sums) -> AuditReport:
    """One partition's sums as a report of their own (its store figures left at 0)."""
    counters = sums.counters
    return AuditReport(
        at_ms=0,
        received=counters.get("received", 0),
        processed=counters.get("processed", 0),
        dlq=sums.dlq,
        deleted=counters.get("deleted", 0),
        queued=max(sums.length - sums.pending, 0),
        pending=sums.pending,
        scheduled=sums.scheduled,
        store_processed=0,
        live_in_store=0,
        partition=index,
        parked=sums.parked,
    )


def _total(shares: tuple[AuditReport, ...]) -> AuditReport:
    if len(shares) == 1:
        return replace(shares[0], partition=None)
    return AuditReport(
        at_ms=0,
        received=sum(s.received for s in shares),
        processed=sum(s.processed for s in shares),
        dlq=sum(s.dlq for s in shares),
        deleted=sum(s.deleted for s in shares),
        queued=sum(s.queued for s in shares),
        pending=sum(s.pending for s in shares),
        scheduled=sum(s.scheduled for s in shares),
        store_processed=0,
        live_in_store=0,
        parked=sum(s.parked for s in shares),
    )


def _conservation(r: AuditReport) -> Problem | None:
    """The law for one partition's sums (``r.partition`` set) or the deployment's."""
    if r.accounted == r.received:
        return None
    diff = r.accounted - r.received
    where = "" if r.partition is None else f"partition {r.partition}: "
    return Problem(
        "conservation",
        abs(diff),
        f"{where}received {r.received} != processed {r.processed} + dlq {r.dlq} + deleted "
        f"{r.deleted} + queued {r.queued} + pending {r.pending} + scheduled {r.scheduled} "
        f"+ parked {r.parked} "
        f"= {r.accounted} ({diff:+d}): events were "
        + ("counted twice or appeared without being received" if diff > 0 else "lost"),
    )
