"""The dead-letter queue: browse, replay (one, all, by type) and delete.

Each move is one atomic script (replay.lua, delete_dead.lua): an event is in the
DLQ or back in the stream, never both and never neither.
"""

from __future__ import annotations

from eventstream.broker import Broker, DeadEntry
from eventstream.errors import NotFound, ValidationError

CHUNK = 500
MAX_ID_PART = 2**64 - 1  # each half of a Redis stream entry id is a uint64


async def replay_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.scripts.replay(broker.redis, [dead.dlq_entry]):
        raise NotFound("dead event", event_id)


async def replay_many(broker: Broker, type_: str | None = None) -> int:
    """Replay every dead event (of one type, if given), oldest first. Returns the count."""
    total = 0
    after = "-"
    while True:
        chunk = await broker.scan_dead(after, CHUNK)
        if not chunk:
            return total
        after = chunk[-1].dlq_entry
        chosen = [d.dlq_entry for d in chunk if type_ is None or d.type == type_]
        if chosen:
            total += len(await broker.scripts.replay(broker.redis, chosen))


async def delete_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.scripts.delete_dead(broker.redis, [(dead.dlq_entry, dead.event_id)]):
        raise NotFound("dead event", event_id)


def _cursor_id(cursor: str) -> tuple[int, int]:
    """A DLQ cursor (a stream entry id ``ms-seq``), checked before Redis sees it."""
    ms, _, seq = cursor.partition("-")
    digits = ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()
    if not (digits and int(ms) <= MAX_ID_PART and int(seq) <= MAX_ID_PART):
        raise ValidationError(
            "cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}]
        )
    return int(ms), int(seq)


async def page(
    broker: Broker, limit: int, cursor: str | None, type_: str | None
) -> tuple[list[DeadEntry], str | None]:
    if cursor is not None and _cursor_id(cursor) == (0, 0):
        return [], None  # nothing comes before the first possible entry id
    items, last = await broker.list_dead(cursor, limit, type_)
    if len(items) < limit:
        return items, None
    more, _ = await broker.list_dead(last, 1, type_)
    return items, last if more else None
