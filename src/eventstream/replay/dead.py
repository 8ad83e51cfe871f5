"""The dead-letter queue: browse, replay (one, all, or chosen by filters at a capped rate) and delete.

Each move is one atomic script (replay.lua, delete_dead.lua): an event is in the
DLQ or back in the stream, never both and never neither.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog

from eventstream.broker import Broker, DeadEntry
from eventstream.errors import NotFound, ValidationError
from eventstream.replay.engine import (
    SAMPLE,
    Pacer,
    Page,
    Preview,
    Selection,
    decode_token,
    encode_token,
    ids_cursor,
    ids_start,
)

log = structlog.get_logger("eventstream.replay.dead")

CHUNK = 500
MAX_ID_PART = 2**64 - 1  # each half of a Redis stream entry id is a uint64


async def replay_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.replay_dead([dead.dlq_entry]):
        raise NotFound("dead event", event_id)
    log.info("dead event replayed", event_id=dead.event_id, event_type=dead.type, attempt=dead.attempts)


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
            total += len(await broker.replay_dead(chosen))


async def delete_one(broker: Broker, event_id: str) -> None:
    dead = await broker.dead_entry_of(event_id)
    if dead is None or not await broker.delete_dead([(dead.dlq_entry, dead.event_id)]):
        raise NotFound("dead event", event_id)
    log.info("dead event deleted", event_id=dead.event_id, event_type=dead.type, attempt=dead.attempts)


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


# ---- replay with filters, dry run and a rate cap ------------------------------------

_DlqCursor = tuple[str, str]  # last DLQ entry examined, last entry of the selection


def _entry_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def _matches(d: DeadEntry, sel: Selection) -> bool:
    return (sel.type is None or d.type == sel.type) and sel.in_range(d.last_failure_ms)


async def _last_entry(broker: Broker) -> str | None:
    newest, _ = await broker.list_dead(None, 1)
    return newest[0].dlq_entry if newest else None


async def _walk(broker: Broker, after: str, upto: str) -> AsyncIterator[DeadEntry]:
    """DLQ entries strictly after ``after`` up to ``upto``, oldest first, read in chunks."""
    end = _entry_key(upto)
    while True:
        chunk = await broker.scan_dead(after, CHUNK)
        for d in chunk:
            if _entry_key(d.dlq_entry) > end:
                return
            yield d
        if len(chunk) < CHUNK:
            return
        after = chunk[-1].dlq_entry


async def _replay_ids(
    broker: Broker, sel: Selection, pacer: Pacer, budget: int, cursor: str | None, page: Page
) -> Page:
    """The listed ids from the cursor's position on, at most ``budget`` of them."""
    wanted = sel.unique_ids()
    done = ids_start(cursor, len(wanted))
    chosen: list[str] = []
    while done < len(wanted) and len(chosen) < budget:
        event_id = wanted[done]
        done += 1
        d = await broker.dead_entry_of(event_id)
        if d is None:
            page.not_found.append(event_id)
        elif _matches(d, sel):
            chosen.append(d.dlq_entry)
    for i in range(0, len(chosen), pacer.chunk):
        await _replay_chunk(broker, chosen[i : i + pacer.chunk], pacer, page)
    page.next_cursor = ids_cursor(done, len(wanted))
    return page


async def _replay_chunk(broker: Broker, entries: list[str], pacer: Pacer, page: Page) -> None:
    await pacer.ready()
    page.replayed += len(await broker.replay_dead(entries))
    pacer.went(len(entries))


async def replay_matching(
    broker: Broker, sel: Selection, *, rate: float, limit: int = 1000, cursor: str | None = None,
    pacer: Pacer | None = None,
) -> Page:  # fmt: skip
    """Replay the dead events the selection matches, oldest first; one call's worth (see
    eventstream.replay.engine). Each keeps its id and gets its attempts afresh."""
    pacer = pacer or Pacer(rate)
    budget = pacer.budget(limit)
    page = Page()
    if sel.ids:
        return await _replay_ids(broker, sel, pacer, budget, cursor, page)
    if cursor:
        after, upto = decode_token(cursor, _DlqCursor)
        _cursor_id(after)
        _cursor_id(upto)
    else:
        newest = await _last_entry(broker)
        if newest is None:
            return page
        after, upto = "-", newest
    pending: list[str] = []
    async for d in _walk(broker, after, upto):
        if _matches(d, sel):
            pending.append(d.dlq_entry)
        if len(pending) >= min(pacer.chunk, budget - page.replayed):
            await _replay_chunk(broker, pending, pacer, page)
            pending = []
            if page.replayed >= budget:
                page.next_cursor = encode_token([d.dlq_entry, upto])
                return page
    if pending:
        await _replay_chunk(broker, pending, pacer, page)
    return page


async def preview_matching(broker: Broker, sel: Selection) -> Preview:
    """A dry run: how many dead events the selection matches now, and the first few ids."""
    if sel.ids:
        found: list[str] = []
        missing: list[str] = []
        for event_id in sel.unique_ids():
            d = await broker.dead_entry_of(event_id)
            if d is None:
                missing.append(event_id)
            elif _matches(d, sel):
                found.append(event_id)
        return Preview(len(found), found[:SAMPLE], missing)
    newest = await _last_entry(broker)
    preview = Preview(0, [])
    if newest is None:
        return preview
    async for d in _walk(broker, "-", newest):
        if _matches(d, sel):
            preview.matched += 1
            if len(preview.sample) < SAMPLE:
                preview.sample.append(d.event_id)
    return preview
