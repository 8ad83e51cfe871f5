"""Live events page by page, for a person to browse (the dashboard's Events page): the
stream's entries (queued or in flight) by place. (The scheduled retries by due time are
views.py's ``Views.retries``, which the Retries page reads too.)

Keyset-paged across the partitions and bounded: a page reads at most ``count`` entries
of each partition, then merges them, so no page walks a whole structure.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from eventstream.broker.entries import StreamEntry
from eventstream.broker.fanout import Partition, gather


@dataclass(frozen=True, slots=True)
class InStream:
    """One stream entry: an event queued, or in flight when a worker holds it."""

    entry: StreamEntry
    in_flight: bool

    @property
    def place(self) -> tuple[int, int, int]:
        """(ms, seq, partition): the order of entries across partitions."""
        return _place(self.entry)


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
