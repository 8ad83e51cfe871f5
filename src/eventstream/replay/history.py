"""Replay from history: processed events, read from the store oldest first, sent again as NEW events.

Each is enqueued as a new event (a new UUIDv7 id, ``replayOf`` = the original's id,
received now) through the same atomic ingest script as a POST, so ``received`` counts
it and the conservation law holds. It keeps the original's ordering key, so it joins
that key's line behind the key's events accepted before it, as a post would. The new
event never inherits the original's idempotency key: it is never deduplicated against
the original, and never blocks a later post with the original's key. Only a request
that carries a key of its own gives each replay the key ``replay:<digest>:<original
id>`` (the digest: 32 hex digits of the SHA-256 of the request key, so the key always
fits the store's column), so retrying the same request enqueues nothing twice within
the dedupe window.

``since`` and ``until`` apply to the processing time (``processedAt``). The selection,
the pacing and the paging are the engine's (eventstream.replay.engine).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Sequence

import msgspec

from eventstream.broker import Broker
from eventstream.event import Envelope, encode_envelope
from eventstream.ingest.accept import enqueue, new_event_id, now_ms
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
from eventstream.store import ProcessedRow, SqlStore
from eventstream.store.sql import CursorMs

HistoryCursor = tuple[CursorMs, str, CursorMs]  # last (processed_at_ms, id) replayed, end of the selection


def replay_key(request_key: str, original_id: str) -> str:
    """The idempotency key of one replay made under a request key: at most 77 characters."""
    digest = hashlib.sha256(request_key.encode()).hexdigest()[:32]
    return f"replay:{digest}:{original_id}"


class HistorySource:
    """The store's processed events as a replay source (see eventstream.replay.engine.Source)."""

    def __init__(
        self, broker: Broker, store: SqlStore, dedupe_window_ms: int, request_key: str | None = None
    ) -> None:
        self.broker = broker
        self.store = store
        self.dedupe_window_ms = dedupe_window_ms
        self.request_key = request_key

    def matches(self, row: ProcessedRow, sel: Selection) -> bool:
        return (sel.type is None or row.type == sel.type) and sel.in_range(row.processed_at_ms)

    async def find(self, ids: Sequence[str]) -> dict[str, ProcessedRow]:
        return await self.store.get_many(list(ids))

    async def walk(
        self, sel: Selection, cursor: str | None, most: int, batch: int
    ) -> AsyncGenerator[tuple[ProcessedRow, Position], None]:
        after: tuple[int, str] | None = None
        end = sel.until_ms if sel.until_ms is not None else now_ms()
        if cursor:
            at, last_id, end = decode_token(cursor, HistoryCursor)
            if "\x00" in last_id:  # no stored id has one, and PostgreSQL refuses it in a query
                raise invalid_cursor()
            after = (at, last_id)
        left = most
        while left > 0:
            asked = min(batch, left)
            rows = await self.store.scan(asked, after, sel.type, sel.since_ms, end)
            for row in rows:
                yield row, (row.processed_at_ms, row.id, end)
            if len(rows) < asked:
                return
            left -= len(rows)
            after = (rows[-1].processed_at_ms, rows[-1].id)

    async def count(self, sel: Selection) -> Preview:
        end = sel.until_ms if sel.until_ms is not None else now_ms()
        matched = await self.store.count_matching(sel.type, sel.since_ms, end)
        sample = await self.store.scan(SAMPLE, None, sel.type, sel.since_ms, end)
        return Preview(matched, [r.id for r in sample])

    async def send(self, rows: list[ProcessedRow], page: Page) -> None:
        now = now_ms()
        results = await enqueue(self.broker, [self._item(r, now) for r in rows], self.dedupe_window_ms)
        for row, acc in zip(rows, results, strict=True):
            if acc.duplicate:
                page.duplicates += 1
            else:
                page.replayed += 1
            page.events.append((acc.event_id, row.id))

    def _item(self, row: ProcessedRow, received_ms: int) -> tuple[str, bytes, str | None, str | None]:
        key = None if self.request_key is None else replay_key(self.request_key, row.id)
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
            orderingKey=row.ordering_key,
        )
        return env.id, encode_envelope(env), key, row.ordering_key


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
    source = HistorySource(broker, store, dedupe_window_ms, request_key)
    return await replay(source, sel, rate=rate, limit=limit, cursor=cursor, pacer=pacer)


async def preview_history(broker: Broker, store: SqlStore, sel: Selection) -> Preview:
    """A dry run: how many processed events the selection holds now, and the first few ids."""
    return await preview(HistorySource(broker, store, dedupe_window_ms=0), sel)
