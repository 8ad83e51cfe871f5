"""What every replay shares: the selection, the pacing, the paging tokens and the send loop.

A source (``eventstream.replay.history``: the store's processed events;
``eventstream.replay.dead``: the DLQ) says how to find, walk and send its events
through :class:`Source`; :func:`replay` and :func:`preview` do the rest, the same for
both.

One call replays at most ``limit`` events and at most ``MAX_REQUEST_S`` seconds' worth
at the rate (whether chosen by filters or by ids), then returns a cursor to continue
from. The pacer waits before a chunk; a call that stops at its budget also waits until
its events are paid for before it returns the cursor, so the next call may start at
once and a replay spread over many calls (a client following the cursor) keeps to the
rate; the call that finishes a replay returns as soon as its last chunk went. Either
way a call lasts at most about ``MAX_REQUEST_S``. The cursor of a filtered replay pins the end of the
selection taken by the first call (``until``, or that call's "now"), so events
processed (or dead-lettered) meanwhile — the replays among them — are never picked up
again by the same replay; the cursor of a replay by ids is the position in the
request's list of ids (send the same ids again with it).

Time ranges: ``since`` is inclusive, ``until`` exclusive; each source says which time
of an event they apply to.

This module imports no backend: the CLI checks a selection with it before it calls the API.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol, TypeVar

import msgspec

from eventstream.errors import ValidationError

MAX_REQUEST_S = 10.0  # one call's share of a long replay, at the chosen rate
MIN_RATE = 0.1  # events/s; slower still would make one event outlast a call
MAX_LIMIT = 10_000
MAX_IDS = 1000
MAX_CHUNK = 500
SAMPLE = 10


@dataclass(frozen=True, slots=True)
class Selection:
    """Which events to replay: every given filter must match; ``ids`` lists them outright."""

    type: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ids) > MAX_IDS:
            raise ValidationError(
                f"{len(self.ids)} ids given; at most {MAX_IDS} per request",
                [{"loc": "query.id", "msg": "too many"}],
            )
        if self.since_ms is not None and self.until_ms is not None and self.since_ms >= self.until_ms:
            raise ValidationError(
                "since must be before until", [{"loc": "query.since", "msg": "after until"}]
            )

    def unique_ids(self) -> list[str]:
        return list(dict.fromkeys(self.ids))

    def in_range(self, at_ms: int) -> bool:
        return (self.since_ms is None or at_ms >= self.since_ms) and (
            self.until_ms is None or at_ms < self.until_ms
        )

    def describe(self) -> str:
        """The selection in one line, for the audit trail: what an operator chose to replay."""
        parts = [f"type={self.type}"] if self.type else []
        parts += [f"since_ms={self.since_ms}"] if self.since_ms is not None else []
        parts += [f"until_ms={self.until_ms}"] if self.until_ms is not None else []
        parts += [f"ids={len(self.ids)}"] if self.ids else []
        return " ".join(parts) or "all"


@dataclass(slots=True)
class Page:
    """What one replay call did."""

    replayed: int = 0
    duplicates: int = 0  # replays already made under the same request key
    next_cursor: str | None = None
    not_found: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (new id, original id), history only


@dataclass(slots=True)
class Preview:
    """A dry run: how many events the selection holds now, and a few of their ids."""

    matched: int
    sample: list[str]
    not_found: list[str] = field(default_factory=list)


class Pacer:
    """Caps a replay at ``rate`` events/s: sends go out in chunks of about a tenth of a
    second's worth, each once the ones before it are paid for. It waits before a chunk,
    never after one, so a call returns as soon as its last chunk went."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.sent = 0
        self.start = clock()

    @property
    def chunk(self) -> int:
        return max(1, min(MAX_CHUNK, int(self.rate / 10)))

    def budget(self, limit: int) -> int:
        """How many events one call may replay: ``limit``, and no more than MAX_REQUEST_S at the rate."""
        return max(1, min(limit, int(self.rate * MAX_REQUEST_S)))

    async def ready(self) -> None:
        """Wait until the events sent so far are paid for at the rate: the next may go."""
        delay = self.start + self.sent / self.rate - self.clock()
        if delay > 0:
            await self.sleep(delay)

    def went(self, n: int) -> None:
        """``n`` more events went out."""
        self.sent += n


# ---- paging tokens ------------------------------------------------------------------


def encode_token(parts: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(parts))).decode().rstrip("=")


def invalid_cursor() -> ValidationError:
    return ValidationError("cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}])


def decode_token(token: str, shape: Any) -> Any:
    """A token back into ``shape`` (a msgspec type); anything else is a 422 naming the cursor."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise invalid_cursor() from None


_IdsCursor = tuple[Annotated[int, msgspec.Meta(ge=1, le=MAX_IDS)]]  # ids of the request done so far


def ids_start(cursor: str | None, n_ids: int) -> int:
    """Where a replay by ids resumes in the request's (deduplicated) list of ids."""
    if not cursor:
        return 0
    (done,) = decode_token(cursor, _IdsCursor)
    if done >= n_ids:  # not a cursor of a request with these ids
        raise invalid_cursor()
    return int(done)


def ids_cursor(done: int, n_ids: int) -> str | None:
    return encode_token([done]) if done < n_ids else None


# ---- where sources and the engine meet ------------------------------------------------

Item = TypeVar("Item")
Position = tuple[Any, ...]  # where a filtered walk resumes: the parts of its cursor


class Source(Protocol[Item]):
    """What a replay reads from and sends to (``history.HistorySource``, ``dead.DeadSource``)."""

    def matches(self, item: Item, sel: Selection) -> bool:
        """Whether an event found by id passes the selection's filters."""
        ...

    async def find(self, ids: Sequence[str]) -> dict[str, Item]:
        """The listed events that the source holds now, by id."""
        ...

    def walk(
        self, sel: Selection, cursor: str | None, most: int, batch: int
    ) -> AsyncGenerator[tuple[Item, Position], None]:
        """The events the filters match, oldest first, from the cursor on (its end pinned by
        the first call), at most ``most``, read ``batch`` at a time; each with the position
        that resumes after it. A cursor that is not one of the source's raises a 422."""
        ...

    async def count(self, sel: Selection) -> Preview:
        """How many events the filters match now, and the first few ids (a dry run)."""
        ...

    async def send(self, items: list[Item], page: Page) -> None:
        """Send one chunk back to the queue, counting it in ``page``."""
        ...


async def replay(
    source: Source[Item], sel: Selection, *, rate: float, limit: int, cursor: str | None,
    pacer: Pacer | None = None,
) -> Page:  # fmt: skip
    """One call's worth of a replay (see the module docstring)."""
    pacer = pacer or Pacer(rate)
    budget = pacer.budget(limit)
    page = Page()
    chosen: list[Item] = []
    if sel.ids:
        wanted = sel.unique_ids()
        done = ids_start(cursor, len(wanted))
        while done < len(wanted) and len(chosen) < budget:
            # no more lookups than the call may still replay: the rest wait for the next call
            part = wanted[done : done + budget - len(chosen)]
            done += len(part)
            found = await source.find(part)
            for event_id in part:
                if event_id not in found:
                    page.not_found.append(event_id)
                elif source.matches(found[event_id], sel):
                    chosen.append(found[event_id])
        for i in range(0, len(chosen), pacer.chunk):
            await _send(source, chosen[i : i + pacer.chunk], pacer, page)
        page.next_cursor = ids_cursor(done, len(wanted))
        if page.next_cursor:
            await pacer.ready()
        return page
    sent = 0
    async with aclosing(source.walk(sel, cursor, budget, pacer.chunk)) as walk:
        async for item, position in walk:
            chosen.append(item)
            if len(chosen) >= min(pacer.chunk, budget - sent):
                await _send(source, chosen, pacer, page)
                sent += len(chosen)
                chosen = []
                if sent >= budget:
                    page.next_cursor = encode_token(position)
                    await pacer.ready()  # paid for: the next call may send at once
                    return page
    if chosen:
        await _send(source, chosen, pacer, page)
    return page


async def _send(source: Source[Item], items: list[Item], pacer: Pacer, page: Page) -> None:
    await pacer.ready()
    await source.send(items, page)
    pacer.went(len(items))


async def preview(source: Source[Item], sel: Selection) -> Preview:
    """A dry run: how many events the selection holds now, and the first few ids."""
    if not sel.ids:
        return await source.count(sel)
    wanted = sel.unique_ids()
    found = await source.find(wanted)
    chosen = [i for i in wanted if i in found and source.matches(found[i], sel)]
    return Preview(len(chosen), chosen[:SAMPLE], [i for i in wanted if i not in found])
