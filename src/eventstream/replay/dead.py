"""The dead-letter queue: browse and delete, replay one, and the DLQ as a replay source.

Each move is one atomic script (replay.lua, delete_dead.lua): an event is in the
DLQ or back in the stream, never both and never neither. A replay sends a dead event
back as itself: the same id, attempts counted afresh. ``since`` and ``until`` apply to
the time of the last failure (``failedAt``); the selection, the pacing and the paging
are the engine's (eventstream.replay.engine).
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
import structlog

from eventstream.broker import Broker, DeadEntry, DeadFilter, position_key
from eventstream.errors import NotFound
from eventstream.replay.engine import (
    MAX_LIMIT,
    SAMPLE,
    Pacer,
    Page,
    Position,
    Preview,
    Selection,
    decode_token,
    encode_token,
    invalid_cursor,
    preview,
    replay,
)

log = structlog.get_logger("eventstream.replay.dead")

CHUNK = 500
SEARCH_BUDGET = 2000  # entries one search examines at most (one page of the dashboard)
COUNT_CHUNK = 2000  # entries one count_dead.lua call examines at most (a few ms of the server)


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


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(text: str) -> str:
    """``text`` with its ASCII letters in lower case, and nothing else changed: the case
    the reason filter ignores, here and in count_dead.lua (Lua's string.lower in the
    server's C locale), so that a count and the replay it confirms take the same events."""
    return text.translate(_ASCII_LOWER)


def reason_has(d: DeadEntry, text: str | None) -> bool:
    """Whether the entry's reason contains ``text``, ignoring the case of ASCII letters
    (no text: every entry)."""
    return not text or fold(text) in fold(d.reason)


@dataclass(slots=True)
class Found:
    """One bounded search of the DLQ (see :func:`search`)."""

    items: list[DeadEntry]
    next_cursor: str | None  # where the next search resumes; None: the oldest entry was examined
    examined: int  # entries looked at
    reached: DeadEntry | None  # the oldest of them: how far back the search got


async def search(
    broker: Broker, limit: int, cursor: str | None, type_: str | None, text: str | None,
    budget: int = SEARCH_BUDGET,
) -> Found:  # fmt: skip
    """Dead events newest first before ``cursor`` whose type is ``type_`` and whose reason
    contains ``text`` (ignoring case): at most ``limit`` of them, and at most ``budget``
    entries examined, so a rare match costs one bounded read per call; the cursor
    returned resumes after the last entry examined."""
    found = Found([], None, 0, None)
    if cursor is not None and _cursor_id(cursor, broker)[:2] == (0, 0):
        return found
    at = cursor
    while len(found.items) < limit and found.examined < budget:
        want = min(CHUNK, budget - found.examined)
        chunk, _ = await broker.list_dead(at, want)
        full = False
        for d in chunk:
            found.examined += 1
            found.reached = d
            at = d.position
            if (type_ is None or d.type == type_) and reason_has(d, text):
                found.items.append(d)
                full = len(found.items) == limit
                if full:
                    break
        if not full and len(chunk) < want:
            return found  # the oldest entry was examined: nothing older is left
    found.next_cursor = at
    return found


# ---- the DLQ as a replay source ------------------------------------------------------

DeadCursor = tuple[str, str]  # DLQ positions: the last examined, the selection's last


class DeadSource:
    """The DLQ as a replay source (see eventstream.replay.engine.Source)."""

    def __init__(self, broker: Broker, reason: str | None = None) -> None:
        self.broker = broker
        self.reason = reason  # only entries whose reason contains it (reason_has)

    def matches(self, d: DeadEntry, sel: Selection) -> bool:
        return (
            (sel.type is None or d.type == sel.type)
            and sel.in_range(d.last_failure_ms)
            and reason_has(d, self.reason)
        )

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
        tally = await count_matching(self.broker, sel, self.reason)
        return Preview(tally.matched, tally.sample)

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


# ---- counting in the server ----------------------------------------------------------

_ENTRY = r"[0-9]{1,20}-[0-9]{1,20}"
_START = re.compile(rf"^(-|\({_ENTRY})?$")  # where a partition's count resumes ('': done)
_END = re.compile(rf"^({_ENTRY})?$")  # its last entry, pinned by the first call
_Counted = Annotated[int, msgspec.Meta(ge=0)]
_CountCursor = tuple[list[str], list[str], _Counted, _Counted]  # starts, ends, matched, examined


@dataclass(slots=True)
class Tally:
    """A count of the dead events a filter matches (see :func:`count_matching`)."""

    matched: int
    examined: int  # entries looked at (the DLQ's length when nothing filters)
    sample: list[str]  # the first matches' event ids, oldest first (of a count without a budget)
    cursor: str | None = None  # to count on; None: counted to the end


async def count_matching(
    broker: Broker, sel: Selection, reason: str | None = None, *, cursor: str | None = None,
    budget_s: float | None = None,
) -> Tally:  # fmt: skip
    """How many dead events the selection matches (and whose reason contains ``reason``,
    see :func:`reason_has`), counted by the server (count_dead.lua): only the counts and
    the first few ids come back, never the entries. The count ends at the entries that
    were newest at the first call.

    ``budget_s``: stop after a slice once that long has passed, with a cursor that counts
    on (``matched`` and ``examined`` are then the totals so far), so that a page can show
    a long count's progress and no request waits for a whole big DLQ."""
    if not cursor and sel.type is None and sel.since_ms is None and sel.until_ms is None and not reason:
        # every entry: the DLQ's length, not a walk through it
        oldest = await broker.scan_dead("-", SAMPLE)
        total = await broker.dead_count()
        return Tally(total, total, [d.event_id for d in oldest])
    n_parts = len(broker.partitions)
    if cursor:
        starts, ends, matched, examined = decode_token(cursor, _CountCursor)
        shaped = len(starts) == len(ends) == n_parts
        if not (shaped and all(map(_START.match, starts)) and all(map(_END.match, ends))):
            raise invalid_cursor()
    else:
        ends = [e or "" for e in await broker.dead_ends()]
        starts, matched, examined = ["-" if e else "" for e in ends], 0, 0
    deadline = None if budget_s is None else time.monotonic() + budget_s
    match = DeadFilter(sel.type, reason or None, sel.since_ms, sel.until_ms)
    sampled = cursor is None and deadline is None  # a whole count: its first matches are the first
    firsts: dict[int, list[tuple[str, str]]] = {i: [] for i in range(n_parts)}
    while spans := {i: (start, ends[i]) for i, start in enumerate(starts) if start and ends[i]}:
        want = {i: SAMPLE - len(firsts[i]) if sampled else 0 for i in spans}
        tallies = await broker.count_dead(spans, COUNT_CHUNK, match, max(want.values()))
        for i, t in tallies.items():
            matched += t.matched
            examined += t.examined
            firsts[i] += t.firsts[: want[i]]
            done = t.last is None or t.last == ends[i] or t.examined < COUNT_CHUNK
            starts[i] = "" if done else f"({t.last}"
        if deadline is not None and time.monotonic() >= deadline:
            break
    named = sorted((f for fs in firsts.values() for f in fs), key=lambda f: position_key(f[0]) or (0, 0, 0))
    sample = [event_id for _, event_id in named[:SAMPLE]]
    more = any(start and ends[i] for i, start in enumerate(starts))
    return Tally(matched, examined, sample, encode_token([starts, ends, matched, examined]) if more else None)


async def replay_matching(
    broker: Broker, sel: Selection, *, rate: float, limit: int = 1000, cursor: str | None = None,
    pacer: Pacer | None = None, reason: str | None = None,
) -> Page:  # fmt: skip
    """Replay the dead events the selection matches (and whose reason contains
    ``reason``, ignoring case), oldest first; one call's worth (see
    eventstream.replay.engine). Each keeps its id and gets its attempts afresh."""
    source = DeadSource(broker, reason)
    return await replay(source, sel, rate=rate, limit=limit, cursor=cursor, pacer=pacer)


async def preview_matching(broker: Broker, sel: Selection, reason: str | None = None) -> Preview:
    """A dry run: how many dead events the selection matches now, and the first few ids."""
    return await preview(DeadSource(broker, reason), sel)


@dataclass(slots=True)
class Deleted:
    """What one delete call did."""

    deleted: int = 0
    next_cursor: str | None = None
    not_found: list[str] = field(default_factory=list)


async def delete_matching(
    broker: Broker, sel: Selection, *, limit: int = MAX_LIMIT, cursor: str | None = None,
    reason: str | None = None,
) -> Deleted:  # fmt: skip
    """Delete the dead events the selection matches (and whose reason contains
    ``reason``), oldest first, at most ``limit`` per call: by ids, or walking the DLQ
    as a replay does (the cursor returned continues it, its end pinned by the first call)."""
    source = DeadSource(broker, reason)
    out = Deleted()
    chosen: list[DeadEntry] = []

    async def flush() -> None:
        gone = set(await broker.delete_dead([(d.position, d.event_id) for d in chosen]))
        out.deleted += len(gone)
        if sel.ids:  # deleted meanwhile by someone else
            out.not_found += [d.event_id for d in chosen if d.event_id not in gone]
        chosen.clear()

    if sel.ids:
        wanted = sel.unique_ids()
        found = await source.find(wanted)
        out.not_found = [i for i in wanted if i not in found]
        chosen += [found[i] for i in wanted if i in found and source.matches(found[i], sel)]
        await flush()
        return out
    taken = 0
    async with aclosing(source.walk(sel, cursor, limit, CHUNK)) as walk:
        async for d, position in walk:
            chosen.append(d)
            taken += 1
            if len(chosen) == CHUNK:
                await flush()
            if taken == limit:
                out.next_cursor = encode_token(position)
    if chosen:
        await flush()
    if out.deleted:
        log.info("dead events deleted", deleted=out.deleted, selection=sel.describe())
    return out
