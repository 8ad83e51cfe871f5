"""Handlers for the log tests, imported by REAL worker processes (``tests.support.apps.logs:app``)."""

from __future__ import annotations

import logging
import warnings

from eventstream import Event, EventStream

app = EventStream("observability")


@app.handler("FLAKY", max_attempts=3)
async def flaky(event: Event) -> None:
    """Fails on the first try, succeeds on the second."""
    if event.attempt == 1:
        raise ConnectionError(f"payment gateway timed out for {event.payload['order']}")


@app.handler("BROKEN", max_attempts=2)
async def broken(event: Event) -> None:
    """Always fails: dead after two tries."""
    raise ValueError("template 'welcome' not found")


@app.handler("CHATTY")
def chatty(event: Event) -> None:
    """Logs through the standard library, as a handler's own dependencies do."""
    logging.getLogger("thirdparty.client").warning("slow answer from %s", "inventory")
    warnings.warn("the old api is going away", UserWarning, stacklevel=1)
