"""Handler apps for the end-to-end tests, imported by REAL worker processes.

Run as ``python -m eventstream worker tests.support.apps.e2e:app`` with the repository root
on PYTHONPATH. Every handler leaves a side effect the test can count (tests/support/effects.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventstream import Event, EventStream, PermanentError
from tests.support.effects import record

app = EventStream("e2e")


@app.handler("OK")
async def ok(event: Event) -> None:
    """Succeeds at once."""
    record("OK", event)


@app.handler("SYNC_OK")
def sync_ok(event: Event) -> None:
    """A synchronous handler (runs in the worker's thread pool) that succeeds."""
    record("SYNC_OK", event)


@app.handler("FLAKY", max_attempts=5)
async def flaky(event: Event) -> None:
    """Fails on the first two tries, succeeds on the third."""
    record("FLAKY_TRY", event)
    if event.attempt < 3:
        raise ConnectionError(f"flaky dependency timed out (attempt {event.attempt})")
    record("FLAKY", event)


@app.handler("FAIL", max_attempts=3)
async def always_fail(event: Event) -> None:
    """Always fails: dead after three tries."""
    record("FAIL_TRY", event)
    raise RuntimeError("this handler always fails")


@app.handler("PERM")
async def permanent(event: Event) -> None:
    """Refuses the event for good on the first try."""
    record("PERM_TRY", event)
    raise PermanentError("refused for good")


@app.handler("REFUSE")
async def refuse(event: Event) -> None:
    """Refuses the event for good with ``payload.reason`` as the reason (any text)."""
    record("REFUSE_TRY", event)
    raise PermanentError(str(event.payload.get("reason", "refused")))


@app.handler("SLOW")
async def slow(event: Event) -> None:
    """Takes ``payload.ms`` milliseconds, then records its side effect."""
    await asyncio.sleep(float(event.payload.get("ms", 20)) / 1000)
    record("SLOW", event)


@app.handler("LONG")
async def long_running(event: Event) -> None:
    """Runs for ``payload.seconds`` (longer than the visibility timeout in the tests)."""
    record("LONG_START", event)
    await asyncio.sleep(float(event.payload["seconds"]))
    record("LONG", event)


@app.handler("GATE")
async def gate(event: Event) -> None:
    """Blocks until the file named by ``payload.gate`` exists."""
    record("GATE_START", event)
    gate_file = Path(event.payload["gate"])
    while not await asyncio.to_thread(gate_file.exists):  # noqa: ASYNC110 - another process makes it
        await asyncio.sleep(0.02)
    record("GATE", event)
