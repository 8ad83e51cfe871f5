"""The dead-letter queue: browse and delete, replay one, and the DLQ as a replay source.

Each move is one atomic script (replay.lua, delete_dead.lua): an event is in the
DLQ or back in the stream, never both and never neither. A replay sends a dead event
back as itself: the same id, attempts counted afresh. ``since`` and ``until`` apply to
the time of the last failure (``failedAt``); the selection, the pacing and the paging
are the engine's (eventstream.replay.engine).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import structlog

from eventstream.broker import Broker, DeadEntry, position_key
from eventstream.errors import NotFound
from eventstream.replay.engine import (
    SAMPLE,
    Pacer,
    Page,
    Position,
    Preview,
    Selection,
    decode_token,
    invalid_cursor,
    preview,
    replay,
)

log = structlog.get_logger("eventstream.replay.dead")

CHUNK = 500


async def replay_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.replay_dead([dead.position]):
        raise NotFound("dead event", event_id)
    log.info("dead event replayed", event_id=dead.event_id, event_type=dead.type, attempt=dead.attempts)


async def delete_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.delete_dead([(dead.position, dead.event_id)]):
        raise NotFound("dead event", event_id)
    log.info("dead event deleted", event_id=dead.event_id, event_type=dead.type, attempt=dead.attempts)


def _cursor_id(cursor: str, broker: Broker) -> tuple[int, int, int]:
    """A DLQ cursor (a DLQ position: ``ms-seq``, or ``ms-seq-partition`` of one of the
    deployment's partitions), checked before Redis sees it."""
    key = position_key(cursor)
    if key is None or key[2] >= len(broker.partitions):
        raise invalid_cursor()
    return key


async def page(
    broker: Broker, limit: int, cursor: str | None, type_: str | None
) -> tuple[list[DeadEntry], str | None]:
    """Dead events newest first, ``limit`` of them before ``cursor``; and the next cursor."""
    if cursor is not None and _cursor_id(cursor, broker)[:2] == (0, 0):
        return [], None  # nothing comes before the first possible entry id
    items, last = await broker.list_dead(cursor, limit, type_)
    if len(items) < limit:
        return items, None
    more, _ = await broker.list_dead(last, 1, type_)
    return items, last if more else None


# ---- the DLQ as a replay source ------------------------------------------------------

DeadCursor = tuple[str, str]  # DLQ positions: the last examined, the selection's last


class DeadSource:
    """The DLQ as a replay source (see eventstream.replay.engine.Source)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def matches(self, d: DeadEntry, sel: Selection) -> bool:
        return (sel.type is None or d.type == sel.type) and sel.in_range(d.last_failure_ms)

    async def find(self, ids: Sequence[str]) -> dict[str, DeadEntry]:
        found = {}
        for event_id in ids:
            d = await self.broker.dead_entry_of(event_id)
            if d is not None:
                found[event_id] = d
        return found

    async def walk(
        self, sel: Selection, cursor: str | None, most: int, batch: int
    ) -> AsyncGenerator[tuple[DeadEntry, Position], None]:
        if cursor:
            after, upto = decode_token(cursor, DeadCursor)
            _cursor_id(after, self.broker)
            _cursor_id(upto, self.broker)
        else:
            newest = await self._last_entry()
            if newest is None:
                return
            after, upto = "-", newest
        left = most
        async for d in self._entries(after, upto):
            if self.matches(d, sel):
                yield d, (d.position, upto)
                left -= 1
                if left <= 0:
                    return

    async def count(self, sel: Selection) -> Preview:
        found = Preview(0, [])
        newest = await self._last_entry()
        if newest is None:
            return found
        async for d in self._entries("-", newest):
            if self.matches(d, sel):
                found.matched += 1
                if len(found.sample) < SAMPLE:
                    found.sample.append(d.event_id)
        return found

    async def send(self, items: list[DeadEntry], page: Page) -> None:
        page.replayed += len(await self.broker.replay_dead([d.position for d in items]))

    async def _last_entry(self) -> str | None:
        newest, _ = await self.broker.list_dead(None, 1)
        return newest[0].position if newest else None

    async def _entries(self, after: str, upto: str) -> AsyncGenerator[DeadEntry, None]:
        """DLQ entries strictly after ``after`` up to ``upto``, oldest first, read in chunks."""
        end = _cursor_id(upto, self.broker)
        while True:
            chunk = await self.broker.scan_dead(after, CHUNK)
            for d in chunk:
                if _cursor_id(d.position, self.broker) > end:
                    return
                yield d
            if len(chunk) < CHUNK:
                return
            after = chunk[-1].position


async def replay_matching(
    broker: Broker, sel: Selection, *, rate: float, limit: int = 1000, cursor: str | None = None,
    pacer: Pacer | None = None,
) -> Page:  # fmt: skip
    """Replay the dead events the selection matches, oldest first; one call's worth (see
    eventstream.replay.engine). Each keeps its id and gets its attempts afresh."""
    return await replay(DeadSource(broker), sel, rate=rate, limit=limit, cursor=cursor, pacer=pacer)


async def preview_matching(broker: Broker, sel: Selection) -> Preview:
    """A dry run: how many dead events the selection matches now, and the first few ids."""
    return await preview(DeadSource(broker), sel)
