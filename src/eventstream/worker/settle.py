"""Record a group of outcomes: store rows first, then ONE Redis round trip."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import structlog

from eventstream import logs
from eventstream.broker import Broker, Completion, DeadLetter, ScheduledRetry
from eventstream.ops.metrics import HistogramBatch
from eventstream.store import ProcessedRow, SqlStore
from eventstream.worker.dispatch import Dead, Done, Outcome, RetryLater
from eventstream.worker.follow_ups import stage

log = structlog.get_logger("eventstream.worker")

_encode = msgspec.json.encode


def _row(done: Done, processed_at_ms: int) -> ProcessedRow:
    env = done.envelope
    return ProcessedRow(
        env.id,
        env.type,
        _encode(env.payload).decode(),
        env.source,
        env.severity,
        env.timestamp,
        env.idempotencyKey,
        env.replayOf,
        done.attempt,
        env.receivedAt,
        processed_at_ms,
        env.orderingKey,
        env.causationId,
        _encode([f.id for f in done.follow_ups]).decode() if done.follow_ups else None,
    )


async def stage_follow_ups(broker: Broker, outcomes: list[Outcome]) -> None:
    """Stage what the successes emitted, before their store rows (see eventstream.broker.emits)."""
    items = [
        (o.delivery.partition, o.delivery.event_id, stage(o.follow_ups))
        for o in outcomes
        if isinstance(o, Done) and o.follow_ups and not o.skipped
    ]
    if items:
        await broker.stage_follow_ups(items)


async def write_rows(store: SqlStore, outcomes: list[Outcome]) -> None:
    """Write the store rows of the successes (idempotent: existing ids are kept)."""
    now = time.time_ns() // 1_000_000
    rows = [_row(o, now) for o in outcomes if isinstance(o, Done) and not o.skipped]
    await store.record(rows)


async def record_outcomes(broker: Broker, consumer: str, outcomes: list[Outcome], limits: str = "") -> int:
    """Apply complete / schedule_retry / dead_letter for a group in one round trip.
    ``limits``: the handlers' key_concurrency (broker.key_limits of the app's).

    Returns how many outcomes were rejected because this worker no longer owned
    the entry (another worker reclaimed it after the visibility timeout).
    """
    done: list[Completion] = []
    retries: list[ScheduledRetry] = []
    dead: list[DeadLetter] = []
    hist = HistogramBatch()
    now = time.time_ns() // 1_000_000
    for o in outcomes:
        d = o.delivery
        if isinstance(o, Done):
            follow_ups = [(f.id, f.envelope, f.ordering_key) for f in o.follow_ups]
            done.append(Completion(d.entry, d.event_id, o.skipped, d.partition, d.order, follow_ups))
            if not o.skipped:
                hist.observe("handler", o.handler_s)
                hist.observe("e2e", max(0, now - o.envelope.receivedAt) / 1000)
        elif isinstance(o, RetryLater):
            retries.append(
                ScheduledRetry(
                    d.entry,
                    d.event_id,
                    due_ms=o.due_ms,
                    attempts=o.attempts,
                    first_failure_ms=o.first_failure_ms,
                    envelope=d.envelope.encode(),
                    partition=d.partition,
                    order=d.order,
                    reason=o.reason,
                )
            )
        else:
            dead.append(
                DeadLetter(
                    d.entry,
                    d.event_id,
                    type=o.type,
                    envelope=d.envelope.encode(),
                    attempts=o.attempts,
                    reason=o.reason,
                    traceback=o.traceback,
                    first_failure_ms=o.first_failure_ms,
                    last_failure_ms=o.last_failure_ms,
                    handler_ran=o.handler_ran,
                    partition=d.partition,
                    order=d.order,
                )
            )
    flags_by_kind = dict(
        zip(
            (Done, RetryLater, Dead),
            await broker.settle(consumer, done, retries, dead, hist.fields(), limits),
            strict=True,
        )
    )
    # Logged once recorded (a retried round trip logs nothing twice). Successes: no
    # line at info (one per event is too many), one at debug when that is on.
    rejected = 0
    for kind, flags in flags_by_kind.items():
        if not flags or (kind is Done and all(flags) and not logs.debug_enabled):
            continue
        for o, flag in zip([o for o in outcomes if isinstance(o, kind)], flags, strict=True):
            if not int(flag):
                rejected += 1
                log.warning("outcome rejected: another worker took the event over", **_about(o))
            elif isinstance(o, RetryLater):
                log.warning(
                    "handler failed, retry scheduled",
                    **_about(o),
                    error=o.reason,
                    retry_in_s=round(max(0, o.due_ms - now) / 1000, 3),
                )
            elif isinstance(o, Dead):
                log.error("dead-lettered", **_about(o), reason=o.reason)
            elif not o.skipped:
                log.debug("processed", **_about(o), handler_s=round(o.handler_s, 6))
    return rejected


def _about(o: Outcome) -> dict[str, Any]:
    """The fields every line about one event carries."""
    if isinstance(o, Done):
        return {"event_id": o.envelope.id, "event_type": o.envelope.type, "attempt": o.attempt}
    return {"event_id": o.delivery.event_id, "event_type": o.type, "attempt": o.attempts}
