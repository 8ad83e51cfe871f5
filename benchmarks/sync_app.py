"""The app of the sync-handler drain: every event runs a no-op plain ``def`` handler
(in the worker's handler threads, as any sync handler)."""

from __future__ import annotations

from eventstream import Event, EventStream

app = EventStream("bench-sync")


@app.handler("*")
def record(event: Event) -> None:
    return None
