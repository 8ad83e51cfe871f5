"""Retention: prune processed events older than EVENTSTREAM_RETENTION from the store.

Rows go in batches of ``retention_batch``, each deleted by primary key in its own
short transaction (the batch is found through the processed_at_ms index), so a
prune never holds a long lock and ingest and workers carry on meanwhile. Workers
run it every ``retention_interval``; a lease in Redis (take_turn.lua) makes one of
them do it per period, however many run. DLQ entries live in Redis, not in the
store: they are kept until replayed or deleted.

The retention may not be shorter than the dedupe window (checked in Settings): the
store is the lasting record of "already processed".
"""

from __future__ import annotations

import asyncio
import random
import time

import structlog

from eventstream.broker import Broker
from eventstream.errors import BackendUnavailable
from eventstream.settings import Settings
from eventstream.store import SqlStore

log = structlog.get_logger("eventstream.ops.retention")

JOB = "retention"


def cutoff_ms(retention_s: float, now_ms: int | None = None) -> int:
    """Rows processed before this instant (ms) are past the retention."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return now - int(retention_s * 1000)


async def prune(store: SqlStore, cutoff: int, batch: int) -> int:
    """Delete every row processed before ``cutoff`` (ms), ``batch`` rows per transaction.

    Returns how many went. Other writers are never blocked for more than one batch.
    """
    total = 0
    while True:
        gone = await store.prune_batch(cutoff, batch)
        total += gone
        if gone < batch:
            return total
        await asyncio.sleep(0)  # let the event loop serve others between batches


async def prune_if_my_turn(settings: Settings, broker: Broker, store: SqlStore, owner: str) -> int | None:
    """Prune when this process holds the period's lease; None when another one has it."""
    if settings.retention == 0:
        return None
    period_ms = int(settings.retention_interval * 1000)
    if not await broker.take_turn(JOB, owner, period_ms):
        return None
    cutoff = cutoff_ms(settings.retention)
    gone = await prune(store, cutoff, settings.retention_batch)
    log.info("retention: pruned the store", deleted=gone, older_than_s=settings.retention)
    return gone


async def run_periodically(settings: Settings, broker: Broker, store: SqlStore, owner: str) -> None:
    """The worker's retention task: try every interval (with jitter) until cancelled."""
    if settings.retention == 0:
        return
    await asyncio.sleep(random.uniform(0, min(settings.retention_interval, 5.0)))
    while True:
        try:
            await prune_if_my_turn(settings, broker, store, owner)
        except BackendUnavailable as exc:
            log.warning("retention: prune failed; trying again next period", error=str(exc))
        except Exception as exc:  # whatever it is, the next period tries again
            error = f"{type(exc).__name__}: {exc}"
            log.exception("retention: prune failed; trying again next period", error=error)
        await asyncio.sleep(settings.retention_interval)
