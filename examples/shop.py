"""A small shop: the app the README walkthrough and the end-to-end tests run.

eventstream up examples.shop:app
"""

from __future__ import annotations

import asyncio

from eventstream import Event, EventStream, PermanentError

app = EventStream("shop")


@app.handler("LOGIN")
async def login(event: Event) -> None:
    """Succeeds at once."""


@app.handler("PAYMENT", max_attempts=5, retry_delay=0.2)
async def charge(event: Event) -> None:
    """Fails transiently: the payment provider answers only on the third try."""
    if event.payload.get("amount", 0) <= 0:
        raise PermanentError(f"amount must be positive, got {event.payload.get('amount')!r}")
    if event.attempt < 3:
        raise ConnectionError(f"payment provider timed out (attempt {event.attempt})")
    await asyncio.sleep(0)


@app.handler("EMAIL", max_attempts=3, retry_delay=0.1)
def send_email(event: Event) -> None:
    """A synchronous handler (runs in a thread) that always fails: its events end in the DLQ."""
    raise RuntimeError(f"SMTP server refused {event.payload.get('to', 'the recipient')}")


@app.handler("REPORT", timeout=0.5, max_attempts=2, retry_delay=0.1)
async def slow_report(event: Event) -> None:
    """Takes longer than its timeout when asked to."""
    await asyncio.sleep(float(event.payload.get("seconds", 0)))
