"""A worker run in-process until nothing is left (burst mode), and what it left behind."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Broker, DeadEntry
from eventstream.broker.keys import GROUP
from eventstream.event import Event
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.worker import Worker

# A burst that has not finished after this long is hung: fail instead of waiting for
# the global pytest timeout. Generous on purpose; it is a hang guard, not a speed check.
BURST_LIMIT_S = 30.0


def recording_app(calls: list[str]) -> EventStream:
    """An app whose handler of type A appends each event's id to ``calls``."""
    app = EventStream("test")

    @app.handler("A")
    async def handle(event: Event) -> None:
        calls.append(event.id)

    return app


async def run_burst(
    app: EventStream, settings: Settings, broker: Broker, store: SqlStore, consumer: str | None = None
) -> Worker:
    """Run a worker until nothing is queued, in flight or scheduled; return it."""
    worker = Worker(app, settings, broker, store, consumer=consumer)
    await worker.run(burst=True)
    return worker


async def burst(
    app: EventStream,
    settings: Settings,
    broker: Broker,
    store: SqlStore,
    consumer: str | None = None,
) -> Worker:
    """run_burst with a hang guard."""
    worker = Worker(app, settings, broker, store, consumer=consumer)
    await asyncio.wait_for(worker.run(burst=True), BURST_LIMIT_S)
    return worker


async def dead_entries(redis: Redis, broker: Broker) -> dict[str, DeadEntry]:
    """Every DLQ entry of every partition, by event id."""
    out: dict[str, DeadEntry] = {}
    for part in broker.partitions:
        for entry, fields in await redis.xrange(part.keys.dlq, "-", "+"):
            dead = DeadEntry.from_fields(entry, fields, part.index)
            assert dead.event_id not in out, f"{dead.event_id} is in the DLQ twice"
            out[dead.event_id] = dead
    return out


async def pending_count(redis: Redis, broker: Broker) -> int:
    info = await redis.xpending(broker.keys.stream, GROUP)
    return int(info["pending"])
