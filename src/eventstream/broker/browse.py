"""Live events page by page, for a person to browse (the dashboard's Events page): the
scheduled retries by due time, and the stream's entries (queued or in flight) by place.

Keyset-paged across the partitions and bounded: a page reads at most ``count`` entries
of each partition, then merges them, so no page walks a whole structure.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from eventstream.broker.entries import StreamEntry, retry_record
from eventstream.broker.fanout import Partition, gather


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One event waiting in a retry set for its next attempt."""

    event_id: str
    due_ms: int
    attempts: int  # attempts made so far
    first_failure_ms: int | None
    envelope: str
    partition: int

    @property
    def cursor(self) -> tuple[int, str]:
        return self.due_ms, self.event_id


@dataclass(frozen=True, slots=True)
class InStream:
    """One stream entry: an event queued, or in flight when a worker holds it."""

    entry: StreamEntry
    in_flight: bool

    @property
    def place(self) -> tuple[int, int, int]:
        """(ms, seq, partition): the order of entries across partitions."""
        return _place(self.entry)


async def scheduled(
    partitions: Sequence[Partition], after: tuple[int, str] | None, until_ms: int | None, count: int
) -> list[Scheduled]:
    """Up to ``count`` scheduled retries, earliest due first, after ``after`` = (due ms,
    event id) and due before ``until_ms``."""
    pages = await gather([p.reads.retries_from(after, until_ms, count) for p in partitions])
    found = []
    for part, page in zip(partitions, pages, strict=True):
        for event_id, due_ms, status, body in page:
            if status is None or not status.startswith("r:") or body is None:
                continue  # promoted (or replayed) while we read
            attempts, first = retry_record(status[2:])
            found.append(Scheduled(event_id, due_ms, attempts, first, body, part.index))
    found.sort(key=lambda s: s.cursor)
    return found[:count]


async def in_stream(
    partitions: Sequence[Partition],
    after: tuple[int, int, int] | None,
    since_ms: int | None,
    until_ms: int | None,
    count: int,
) -> list[InStream]:
    """Up to ``count`` stream entries, oldest first, after the place ``after`` = (ms, seq,
    partition), enqueued from ``since_ms`` (inclusive) to ``until_ms`` (exclusive)."""
    if until_ms is not None and until_ms <= 0:
        return []  # no entry comes before the first possible id (and "(0-0" is no bound)
    high = "+" if until_ms is None else f"({until_ms}-0"

    def low(part: Partition) -> str:
        if after is None:
            return "-" if since_ms is None else f"{max(since_ms, 0)}-0"
        ms, seq, index = after
        return f"({ms}-{seq}" if part.index <= index else f"{ms}-{seq}"

    pages = await gather([p.reads.stream_from(low(p), high, count) for p in partitions])
    entries = [
        [StreamEntry.from_fields(e, fields, part.index) for e, fields in page]
        for part, page in zip(partitions, pages, strict=True)
    ]
    chosen = list(itertools.islice(heapq.merge(*entries, key=_place), count))
    busy: set[tuple[int, str]] = set()
    for part in partitions:
        mine = [s.entry for s in chosen if s.partition == part.index]
        if mine:
            busy.update((part.index, e) for e in await part.reads.in_flight(mine[0], mine[-1], len(mine)))
    return [InStream(s, s.ref in busy) for s in chosen]


def _place(s: StreamEntry) -> tuple[int, int, int]:
    ms, _, seq = s.entry.partition("-")
    return int(ms), int(seq), s.partition
