"""Replay: send events back to the queue, chosen by type, time range or ids, at a capped rate.

Two sources share the selection, the pacing and the paging:

- **history** (``replay_history``): processed events, read from the store oldest first.
  Each is enqueued as a NEW event (a new UUIDv7 id, ``replayOf`` = the original's id,
  received now) through the same atomic ingest script as a POST, so ``received``
  counts it and the conservation law holds. The new event never inherits the
  original's idempotency key: it is never deduplicated against the original, and
  never blocks a later post with the original's key. Only a request that carries a
  key of its own gives each replay the key ``replay:<digest>:<original id>`` (the
  digest: 32 hex digits of the SHA-256 of the request key, so the key always fits the
  store's column), so retrying the same request enqueues nothing twice within the
  dedupe window.
- **DLQ** (``eventstream.replay.dead.replay_matching``): dead events go back as themselves (same
  id, attempts afresh), each in one atomic step (replay.lua).

Time ranges: ``since`` is inclusive, ``until`` exclusive; history filters on the
processing time (``processedAt``), the DLQ on the last failure (``failedAt``).

One call replays at most ``limit`` events and at most ``MAX_REQUEST_S`` seconds' worth
at the rate (whether chosen by filters or by ids), then returns a cursor to continue
from. The pacer waits before a chunk, never after the last one, so a call lasts at
most about ``MAX_REQUEST_S``. The cursor of a filtered replay pins the end of the
selection taken by the first call (``until``, or that call's "now"), so events
processed (or dead-lettered) meanwhile — the replays among them — are never picked up
again by the same replay; the cursor of a replay by ids is the position in the
request's list of ids (send the same ids again with it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from eventstream.broker import Broker
from eventstream.errors import ValidationError
from eventstream.event import Envelope, encode_envelope
from eventstream.ingest.accept import enqueue, new_event_id, now_ms
from eventstream.store import ProcessedRow, SqlStore
from eventstream.store.sql import CursorMs

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


def encode_token(parts: list[Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(parts)).decode().rstrip("=")


def decode_token(token: str, shape: Any) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise ValidationError(
            "cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}]
        ) from None


_HistoryCursor = tuple[CursorMs, str, CursorMs]  # last (processed_at_ms, id) replayed, end of the selection
_IdsCursor = tuple[Annotated[int, msgspec.Meta(ge=1, le=MAX_IDS)]]  # ids of the request done so far


def _invalid_cursor() -> ValidationError:
    return ValidationError("cursor is not one this API returned", [{"loc": "query.cursor", "msg": "invalid"}])


def ids_start(cursor: str | None, n_ids: int) -> int:
    """Where a replay by ids resumes in the request's (deduplicated) list of ids."""
    if not cursor:
        return 0
    (done,) = decode_token(cursor, _IdsCursor)
    if done >= n_ids:  # not a cursor of a request with these ids
        raise _invalid_cursor()
    return int(done)


def ids_cursor(done: int, n_ids: int) -> str | None:
    return encode_token([done]) if done < n_ids else None


def replay_key(request_key: str, original_id: str) -> str:
    """The idempotency key of one replay made under a request key: at most 77 characters."""
    digest = hashlib.sha256(request_key.encode()).hexdigest()[:32]
    return f"replay:{digest}:{original_id}"


def _replay_item(
    row: ProcessedRow, received_ms: int, request_key: str | None
) -> tuple[str, bytes, str | None]:
    key = None if request_key is None else replay_key(request_key, row.id)
    env = Envelope(
        id=new_event_id(),
        type=row.type,
        payload=msgspec.json.decode(row.payload),
        receivedAt=received_ms,
        source=row.source,
        severity=row.severity,
        timestamp=row.timestamp,
        idempotencyKey=key,
        replayOf=row.id,
    )
    return env.id, encode_envelope(env), key


async def _send(
    broker: Broker, rows: list[ProcessedRow], page: Page, dedupe_window_ms: int, request_key: str | None
) -> None:
    now = now_ms()
    results = await enqueue(broker, [_replay_item(r, now, request_key) for r in rows], dedupe_window_ms)
    for row, acc in zip(rows, results, strict=True):
        if acc.duplicate:
            page.duplicates += 1
        else:
            page.replayed += 1
        page.events.append((acc.event_id, row.id))


def _matches(row: ProcessedRow, sel: Selection) -> bool:
    return (sel.type is None or row.type == sel.type) and sel.in_range(row.processed_at_ms)


async def replay_history(
    broker: Broker,
    store: SqlStore,
    sel: Selection,
    *,
    rate: float,
    limit: int = 1000,
    cursor: str | None = None,
    dedupe_window_ms: int,
    request_key: str | None = None,
    pacer: Pacer | None = None,
) -> Page:
    """Re-enqueue processed events as new ones (see the module docstring); one call's worth."""
    pacer = pacer or Pacer(rate)
    budget = pacer.budget(limit)
    page = Page()
    if sel.ids:
        return await _replay_history_ids(broker, store, sel, pacer, budget, cursor, page, dedupe_window_ms,
                                         request_key)  # fmt: skip
    after: tuple[int, str] | None = None
    end = sel.until_ms if sel.until_ms is not None else now_ms()
    if cursor:
        at, last_id, end = decode_token(cursor, _HistoryCursor)
        if "\x00" in last_id:  # no stored id has one, and PostgreSQL refuses it in a query
            raise _invalid_cursor()
        after = (at, last_id)
    while True:
        room = budget - page.replayed - page.duplicates
        if room <= 0:
            assert after is not None
            page.next_cursor = encode_token([after[0], after[1], end])
            return page
        rows = await store.scan(min(pacer.chunk, room), after, sel.type, sel.since_ms, end)
        if not rows:
            return page
        await pacer.ready()
        await _send(broker, rows, page, dedupe_window_ms, request_key)
        pacer.went(len(rows))
        after = (rows[-1].processed_at_ms, rows[-1].id)


async def _replay_history_ids(
    broker: Broker,
    store: SqlStore,
    sel: Selection,
    pacer: Pacer,
    budget: int,
    cursor: str | None,
    page: Page,
    dedupe_window_ms: int,
    request_key: str | None,
) -> Page:
    """The listed ids from the cursor's position on, at most ``budget`` replays."""
    wanted = sel.unique_ids()
    done = ids_start(cursor, len(wanted))
    found = await store.get_many(wanted[done:])
    chosen: list[ProcessedRow] = []
    while done < len(wanted) and len(chosen) < budget:
        event_id = wanted[done]
        done += 1
        if event_id not in found:
            page.not_found.append(event_id)
        elif _matches(found[event_id], sel):
            chosen.append(found[event_id])
    for i in range(0, len(chosen), pacer.chunk):
        part = chosen[i : i + pacer.chunk]
        await pacer.ready()
        await _send(broker, part, page, dedupe_window_ms, request_key)
        pacer.went(len(part))
    page.next_cursor = ids_cursor(done, len(wanted))
    return page


async def preview_history(store: SqlStore, sel: Selection) -> Preview:
    """A dry run: how many processed events the selection holds now, and the first few ids."""
    if sel.ids:
        wanted = sel.unique_ids()
        found = await store.get_many(wanted)
        rows = [found[i] for i in wanted if i in found and _matches(found[i], sel)]
        return Preview(len(rows), [r.id for r in rows[:SAMPLE]], [i for i in wanted if i not in found])
    end = sel.until_ms if sel.until_ms is not None else now_ms()
    matched = await store.count_matching(sel.type, sel.since_ms, end)
    sample = await store.scan(SAMPLE, None, sel.type, sel.since_ms, end)
    return Preview(matched, [r.id for r in sample])
