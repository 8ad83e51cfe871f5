"""Handlers for the fault scenarios, imported by REAL worker processes
(``python -m eventstream worker tests.support.apps.faults:app``).

Each handler leaves side effects the checker counts, as lines
``KIND EVENT_ID ATTEMPT PID UNIX_TIME`` in ``E2E_SIDE_FILE`` (see tests/support/effects.py):

- plain handlers write their effect line every time they run;
- idempotent handlers use ``event.id`` as the idempotency key of their effect: a row
  in a SQLite side table (``FAULTS_SIDE_DB``) with the event id as PRIMARY KEY,
  ``INSERT OR IGNORE``; the effect line is written only when the row was inserted,
  and a ``*_RUN`` line every time the handler runs.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from eventstream import Event, EventStream, Retry
from tests.support.effects import record

SIDE_DB_ENV = "FAULTS_SIDE_DB"

app = EventStream("faults")

_db: sqlite3.Connection | None = None


def _side_db() -> sqlite3.Connection:
    global _db
    if _db is None:
        _db = sqlite3.connect(os.environ[SIDE_DB_ENV], timeout=30, isolation_level=None)
        _db.execute("PRAGMA journal_mode=WAL")
        _db.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT PRIMARY KEY, pid INTEGER)")
    return _db


def idempotent_effect(kind: str, event: Event) -> None:
    """Apply the effect at most once per event id, whatever the redeliveries."""
    record(f"{kind}_RUN", event)
    cur = _side_db().execute(
        "INSERT OR IGNORE INTO effects (event_id, pid) VALUES (?, ?)", (event.id, os.getpid())
    )
    if cur.rowcount == 1:
        record(kind, event)


async def _pause(event: Event) -> None:
    await asyncio.sleep(float(event.payload.get("ms", 20)) / 1000)


@app.handler("WORK")
async def work(event: Event) -> None:
    """A plain handler: takes ``payload.ms``, then applies its effect (not idempotent)."""
    await _pause(event)
    record("WORK", event)


@app.handler("IDEM")
async def idem(event: Event) -> None:
    """Takes ``payload.ms``, then applies its effect keyed by ``event.id``."""
    await _pause(event)
    idempotent_effect("IDEM", event)


async def _wait_gate(event: Event) -> None:
    gate = Path(event.payload["gate"])
    while not await asyncio.to_thread(gate.exists):  # noqa: ASYNC110 - the test makes it
        await asyncio.sleep(0.02)


@app.handler("HANG")
async def hang(event: Event) -> None:
    """Applies its effect, then blocks until ``payload.gate`` exists (the test kills it first)."""
    record("HANG", event)
    await _wait_gate(event)


@app.handler("HANG_IDEM")
async def hang_idem(event: Event) -> None:
    """The idempotent twin of HANG."""
    idempotent_effect("HANG_IDEM", event)
    await _wait_gate(event)


@app.handler("RETRY_AT", max_attempts=3)
async def retry_at(event: Event) -> None:
    """Fails its first try, asking to be retried at ``payload.due`` (unix time); then succeeds."""
    record("RETRY_TRY", event)
    if event.attempt == 1:
        raise Retry(max(0.0, float(event.payload["due"]) - time.time()))
    record("RETRY_OK", event)
