"""The handler app of the follow-up end-to-end tests (tests/e2e/test_emit.py), imported by
REAL worker processes: a PARENT emits three follow-ups (one with an ordering key, so with
several partitions some go through an outbox) and records that it returned; a CHILD
records its run. Side effects as in tests/support/effects.py."""

from __future__ import annotations

from eventstream import Event, EventStream
from tests.support.effects import record

app = EventStream("emits")

FOLLOW_UPS = 3


@app.handler("PARENT")
async def parent(event: Event) -> None:
    n = event.payload["n"]
    event.emit("CHILD", {"of": n, "i": 0})
    event.emit("CHILD", {"of": n, "i": 1}, source="parent")
    event.emit("CHILD", {"of": n, "i": 2}, ordering_key=f"acct-{n % 7}")
    record("RETURNED", event)  # the last thing before the return: the worker records the rest


@app.handler("CHILD")
async def child(event: Event) -> None:
    record("CHILD", event)
