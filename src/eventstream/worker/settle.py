"""Record a group of outcomes: store rows first, then ONE Redis round trip."""

from __future__ import annotations

import time

import msgspec
import structlog

from eventstream.broker import Broker
from eventstream.metrics import HistogramBatch
from eventstream.store import ProcessedRow, SqlStore
from eventstream.worker.dispatch import Done, Outcome, RetryLater

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
    )


async def write_rows(store: SqlStore, outcomes: list[Outcome]) -> None:
    """Write the store rows of the successes (idempotent: existing ids are kept)."""
    now = time.time_ns() // 1_000_000
    rows = [_row(o, now) for o in outcomes if isinstance(o, Done) and not o.skipped]
    await store.record(rows)


async def record_outcomes(broker: Broker, consumer: str, outcomes: list[Outcome]) -> int:
    """Apply complete / schedule_retry / dead_letter for a group in one pipeline.

    Returns how many outcomes were rejected because this worker no longer owned
    the entry (another worker reclaimed it after the visibility timeout).
    """
    scripts = broker.scripts
    done: list[tuple[str, str, bool]] = []
    retries: list[tuple[str, str, int, int, int, bytes]] = []
    dead: list[tuple[str, str, str, bytes, int, str, str, int, int, bool]] = []
    hist = HistogramBatch()
    now = time.time_ns() // 1_000_000
    for o in outcomes:
        d = o.delivery
        if isinstance(o, Done):
            done.append((d.entry, d.event_id, o.skipped))
            if not o.skipped:
                hist.observe("handler", o.handler_s)
                hist.observe("e2e", max(0, now - o.envelope.receivedAt) / 1000)
        elif isinstance(o, RetryLater):
            retries.append(
                (d.entry, d.event_id, o.due_ms, o.attempts, o.first_failure_ms, d.envelope.encode())
            )
            log.info(
                "retry scheduled",
                event_id=d.event_id,
                attempt=o.attempts,
                reason=o.reason,
                due_in_ms=o.due_ms - now,
            )
        else:
            dead.append(
                (
                    d.entry,
                    d.event_id,
                    o.type,
                    d.envelope.encode(),
                    o.attempts,
                    o.reason,
                    o.traceback,
                    o.first_failure_ms,
                    o.last_failure_ms,
                    o.handler_ran,
                )
            )
            log.warning(
                "dead-lettered",
                event_id=d.event_id,
                type=o.type,
                attempt=o.attempts,
                reason=o.reason,
            )
    async with broker.redis.pipeline(transaction=False) as pipe:
        if done:
            await scripts.queue(pipe, "complete", scripts.complete_args(consumer, done, hist.fields()))
        if retries:
            await scripts.queue(pipe, "schedule_retry", scripts.retry_args(consumer, retries))
        if dead:
            await scripts.queue(pipe, "dead_letter", scripts.dead_args(consumer, dead))
        replies = await pipe.execute()
    rejected = sum(1 for reply in replies for flag in reply if not int(flag))
    if rejected:
        log.warning("outcomes rejected: entries were reclaimed by another worker", count=rejected)
    return rejected
