"""Follow-ups (Event.emit) between a handler's return and their partitions.

Three steps, each safe to repeat:

1. ``stage``: before a parent's store row is written, its follow-ups are staged in its
   partition (``{p}:emits``), so that a redelivery which finds the row (the worker died
   between the store write and the completion) completes the parent with them
   (``staged``) instead of losing them.
2. complete.lua records them with the parent's completion, atomically: those of the
   parent's partition are enqueued, the others go to its outbox (``{p}:outbox``).
3. ``relay`` moves outbox entries into their partitions with the ingest script, deduped
   on the follow-up's id (namespace ``EMIT_NAMESPACE``), then deletes them: a relay cut
   short is repeated and finds duplicates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from eventstream.broker.fanout import FanOut, Partition, raise_errors
from eventstream.broker.keys import EMIT_NAMESPACE, Layout, order_digest
from eventstream.broker.scripts import Completion, Dedupe, Emitted, IngestItem
from eventstream.broker.scripts import Outcome as IngestOutcome
from eventstream.errors import PartlyEnqueued
from eventstream.event import decode_envelope

Enqueue = Callable[[Sequence[IngestItem], int], Awaitable[list[tuple[str, IngestOutcome]]]]


def emitted(layout: Layout, partition: int, done: Sequence[Completion]) -> list[Emitted]:
    """The follow-ups of one partition's completions, as complete.lua takes them: each
    with its parent's place, its key's digest, and whether its partition is this one."""
    out: list[Emitted] = []
    for place, c in enumerate(done, 1):
        for event_id, envelope, key in c.follow_ups:
            digest = "" if key is None else order_digest(key)
            here = not digest or layout.count == 1 or layout.partition_of(digest) == partition
            out.append(Emitted(place, event_id, envelope, digest, here))
    return out


class Emits:
    """The staging and the outboxes of a deployment's partitions."""

    def __init__(self, fan_out: FanOut, layout: Layout, enqueue: Enqueue) -> None:
        self._fan_out = fan_out
        self._layout = layout
        self._enqueue = enqueue

    def _parts(self, indexes: Sequence[int]) -> list[Partition]:
        return [self._fan_out.partitions[i] for i in sorted(set(indexes))]

    async def stage(self, items: Sequence[tuple[int, str, str]]) -> None:
        """Stage (partition, parent event id, follow-ups as eventstream.worker.follow_ups.stage wrote
        them) in one round trip."""
        if not items:
            return
        by_part: dict[int, list[str]] = {}
        for partition, parent, blob in items:
            by_part.setdefault(partition, []).extend((parent, blob))

        def queue(pipe: Any, part: Partition) -> None:
            pairs = by_part[part.index]
            pipe.hset(part.keys.emits, mapping=dict(zip(pairs[::2], pairs[1::2], strict=True)))

        for replies in await self._fan_out(queue, parts=self._parts(list(by_part))):
            raise_errors(replies)

    async def staged(self, refs: Sequence[tuple[int, str]]) -> dict[str, str]:
        """The staged follow-ups of (partition, parent event id), by parent id (parents
        with none staged are left out)."""
        if not refs:
            return {}
        by_part: dict[int, list[str]] = {}
        for partition, parent in refs:
            by_part.setdefault(partition, []).append(parent)
        parts = self._parts(list(by_part))
        out: dict[str, str] = {}
        replies = await self._fan_out(lambda pipe, p: pipe.hmget(p.keys.emits, by_part[p.index]), parts=parts)
        for part, [reply] in zip(parts, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            out.update((k, v) for k, v in zip(by_part[part.index], reply, strict=True) if v is not None)
        return out

    async def relay(self, dedupe_window_ms: int, limit: int = 1000) -> int:
        """Move up to ``limit`` follow-ups per partition from the outboxes into their
        partitions; how many were moved (or found already there). What fails to move, or
        is not confirmed by the replicas asked for, stays in its outbox for the next call."""
        replies = await self._fan_out(lambda pipe, p: pipe.hscan(p.keys.outbox, 0, count=limit))
        found: list[tuple[int, str, str]] = []
        for part, [reply] in zip(self._fan_out.partitions, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            found += [(part.index, i, env) for i, env in reply[1].items()]
        if not found:
            return 0
        items: list[IngestItem] = []
        for _, event_id, env in found:
            try:
                key = decode_envelope(env).orderingKey
            except msgspec.DecodeError:  # cannot happen to what complete.lua wrote; relay it unkeyed
                key = None
            items.append((event_id, env.encode(), Dedupe(event_id, EMIT_NAMESPACE), key))
        try:
            results: Sequence[Any] = await self._enqueue(items, dedupe_window_ms)
        except PartlyEnqueued as exc:
            if not exc.confirmed:
                raise exc.error from exc
            results = exc.results
        moved: dict[int, list[str]] = {}
        for (partition, event_id, _), result in zip(found, results, strict=True):
            if result is not None:
                moved.setdefault(partition, []).append(event_id)
        if moved:
            for replies_ in await self._fan_out(
                lambda pipe, p: pipe.hdel(p.keys.outbox, *moved[p.index]), parts=self._parts(list(moved))
            ):
                raise_errors(replies_)
        return sum(len(ids) for ids in moved.values())
