"""The app of the ordering latency benchmark: events of type SLOW (the busy key's) take
BENCH_SLOW_S seconds (default 0.02) each; every other event is a no-op."""

from __future__ import annotations

import asyncio
import os

from eventstream import Event, EventStream

SLOW_S = float(os.environ.get("BENCH_SLOW_S", "0.02"))

app = EventStream("bench-ordering")


@app.handler("SLOW")
async def slow(event: Event) -> None:
    await asyncio.sleep(SLOW_S)


@app.handler("*")
async def record(event: Event) -> None:
    return None
