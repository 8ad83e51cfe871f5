"""The dashboard benchmark's app: DOOMED events fail for good (PermanentError) with one
of a few reasons, so the dead-letter queue fills through the real worker; RETRY events
fail once and wait a day for their next try; everything else is a no-op."""

from __future__ import annotations

from eventstream import Event, EventStream, PermanentError, Retry

app = EventStream("bench-dashboard")

REASONS = ("card declined by the issuer", "timeout talking to smtp.example.com", "schema mismatch in payload")


@app.handler("DOOMED")
async def doomed(event: Event) -> None:
    n = int(event.payload.get("n", 0))
    raise PermanentError(f"{REASONS[n % len(REASONS)]} (order {n})")


@app.handler("RETRY")
async def retry(event: Event) -> None:
    raise Retry(86_400)


@app.handler("*")
async def noop(event: Event) -> None:
    return None
