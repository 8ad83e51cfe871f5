"""Bounded reads for the people watching a deployment (the dashboard): the scheduled
retries soonest first, the workers by their heartbeats, how long the oldest queued
event has waited, and the node that serves each partition.

Each read costs a few commands per partition whatever the deployment holds: ranges
with a limit, never a walk of a whole structure. They are views, not checks: read
without a transaction, so an event that moves meanwhile may show in its old place.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translated
from eventstream.broker.entries import retry_record
from eventstream.broker.fanout import FanOut, Partition, raise_errors
from eventstream.broker.keys import GROUP, Keys

# A cursor of the retry listing: (due ms, partition, event id); see Views.retries.
RetryCursor = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class Retrying:
    """One event waiting in a partition's retry set (keys.py: retry, retry:body, retry:error)."""

    event_id: str
    partition: int
    due_ms: int
    attempts: int  # attempts made so far (0: unknown, its status field moved meanwhile)
    first_failure_ms: int | None
    envelope: str | None  # None: promoted (or gone) between the two reads
    error: str | None  # the failure that scheduled it; None: not recorded

    @property
    def cursor(self) -> RetryCursor:
        return (self.due_ms, self.partition, self.event_id)


@dataclass(frozen=True, slots=True)
class Beat:
    """One consumer's heartbeat, with what it holds."""

    consumer: str
    last_beat_ms: int  # the latest of its beats in any partition
    in_flight: int  # entries pending for it, over every partition
    overdue: str | None  # its overdue report (keys.py: overdue), JSON, if it wrote one


def cursor_text(cursor: RetryCursor) -> str:
    return f"{cursor[0]}:{cursor[1]}:{cursor[2]}"


def parse_cursor(text: str) -> RetryCursor | None:
    """A cursor from ``cursor_text``; None when ``text`` is not one."""
    due, _, rest = text.partition(":")
    partition, _, event_id = rest.partition(":")
    if not (
        due.isascii() and due.isdigit() and len(due) <= 15 and partition.isascii() and partition.isdigit()
    ):
        return None
    if not event_id or len(partition) > 3:
        return None
    return int(due), int(partition), event_id


def _attempts(status: str | None) -> tuple[int, int | None]:
    """(attempts, first failure ms) of a retry's status field; (0, None) once it moved on."""
    return retry_record(status[2:]) if status and status.startswith("r:") else (0, None)


@translated(REDIS)  # like Broker: callers see EventStream's errors, never redis-py's
class Views:
    """The dashboard's reads over a deployment's partitions (module docstring)."""

    def __init__(self, fan_out: FanOut, deployment: Keys) -> None:
        self._fan_out = fan_out
        self._r: Any = fan_out.client
        self._deployment = deployment

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return self._fan_out.partitions

    # ---- retries -------------------------------------------------------------------

    async def retries(
        self,
        after: RetryCursor | None,
        count: int,
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[Retrying]:
        """Up to ``count`` scheduled retries, soonest due first over every partition,
        strictly after ``after`` in the order (due ms, partition, event id), due from
        ``since_ms`` (inclusive; with no cursor) to ``until_ms`` (exclusive): each
        partition's range from the cursor, merged; then their bodies, failures and status
        fields for the chosen ones. Two round trips, ``count`` items per partition at most."""
        high = "+inf" if until_ms is None else f"({until_ms}"
        ranges = await self._fan_out(lambda pipe, p: _range_after(pipe, p, after, count, since_ms, high))
        pages: list[list[tuple[int, int, str]]] = []
        for part, replies in zip(self.partitions, ranges, strict=True):
            raise_errors(replies)
            raw = replies[0]
            page = [c for c in _scored(raw, part.index) if after is None or c > after]
            if after is not None and part.index == after[1]:
                # the cursor's own partition: retries due at its ms up to its id came first;
                # when they filled the read, read on (more than 2 x count due at one ms)
                offset, want = len(raw), 2 * count
                while len(page) < count and len(raw) == want:
                    raw = await self._r.zrangebyscore(
                        part.keys.retry, str(after[0]), high, start=offset, num=want, withscores=True
                    )
                    offset += len(raw)
                    page += [c for c in _scored(raw, part.index) if c > after]
            pages.append(page)
        chosen = list(itertools.islice(heapq.merge(*pages), count))
        by_part: dict[int, list[str]] = {}
        for _, index, event_id in chosen:
            by_part.setdefault(index, []).append(event_id)
        parts = [p for p in self.partitions if p.index in by_part]

        def details(pipe: Any, p: Partition) -> None:
            ids = by_part[p.index]
            pipe.hmget(p.keys.retry_body, ids)
            pipe.hmget(p.keys.retry_error, ids)
            pipe.hmget(p.keys.status, ids)

        found: dict[tuple[int, str], tuple[str | None, str | None, str | None]] = {}
        for part, replies in zip(parts, await self._fan_out(details, parts=parts), strict=True):
            raise_errors(replies)
            bodies, errors, statuses = replies
            for event_id, body, error, status in zip(
                by_part[part.index], bodies, errors, statuses, strict=True
            ):
                found[(part.index, event_id)] = (body, error, status)
        out = []
        for due, index, event_id in chosen:
            body, error, status = found[(index, event_id)]
            attempts, first = _attempts(status)
            out.append(Retrying(event_id, index, due, attempts, first, body, error))
        return out

    # ---- workers -------------------------------------------------------------------

    async def workers(self, limit: int) -> tuple[list[Beat], int]:
        """The ``limit`` consumers that beat last (each partition's latest, merged: every
        worker beats in every partition), with their in-flight counts and overdue
        reports; and how many consumers the heartbeat sets name in all (stale ones stay
        there until they leave; the largest set's size)."""

        def queue(pipe: Any, p: Partition) -> None:
            pipe.zrevrange(p.keys.workers, 0, limit - 1, withscores=True)
            pipe.zcard(p.keys.workers)
            pipe.xpending(p.keys.stream, GROUP)

        beats: dict[str, int] = {}
        held: dict[str, int] = {}
        total = 0
        for replies in await self._fan_out(queue):
            ranked, size, pending = replies
            raise_errors([ranked, size])
            total = max(total, int(size))
            for consumer, score in ranked:
                beats[consumer] = max(beats.get(consumer, 0), int(float(score)))
            if isinstance(pending, ResponseError):
                if "NOGROUP" not in str(pending):  # no stream or group yet: nothing in flight
                    raise pending
                continue
            raise_errors([pending])
            for c in pending.get("consumers") or []:
                held[c["name"]] = held.get(c["name"], 0) + int(c["pending"])
        reports: dict[str, str] = await self._r.hgetall(self._deployment.overdue)
        ranked_all = sorted(beats.items(), key=lambda b: (-b[1], b[0]))[:limit]
        return [Beat(c, ms, held.get(c, 0), reports.get(c)) for c, ms in ranked_all], total

    # ---- waiting -------------------------------------------------------------------

    async def oldest_queued_ms(self, now_ms: int) -> int:
        """How long the oldest event not yet delivered to a worker has waited in its
        stream by ``now_ms`` (0 when none waits): the entry after its group's last
        delivered one, whose id is the time (the server's clock) it entered the stream."""
        groups = await self._fan_out(lambda pipe, p: pipe.xinfo_groups(p.keys.stream))
        last: dict[int, str] = {}
        for part, [reply] in zip(self.partitions, groups, strict=True):
            if isinstance(reply, ResponseError):
                if "no such key" not in str(reply):
                    raise reply
                continue  # no stream: nothing waits
            raise_errors([reply])
            delivered = next((g["last-delivered-id"] for g in reply if g["name"] == GROUP), None)
            last[part.index] = "-" if delivered is None else f"({delivered}"
        parts = [p for p in self.partitions if p.index in last]

        def first(pipe: Any, p: Partition) -> None:
            pipe.xrange(p.keys.stream, min=last[p.index], max="+", count=1)

        oldest = 0
        for replies in await self._fan_out(first, parts=parts) if parts else []:
            raise_errors(replies)
            [entries] = replies
            if entries:
                oldest = max(oldest, now_ms - int(entries[0][0].split("-")[0]))  # never below 0
        return oldest

    # ---- where ---------------------------------------------------------------------

    def nodes(self) -> list[str | None]:
        """The node serving each partition (host:port) on a Redis Cluster, as the client's
        slot map has it now (no round trip); None for each on one server."""
        if not self._fan_out.cluster:
            return [None] * len(self.partitions)
        out: list[str | None] = []
        for p in self.partitions:
            try:
                out.append(str(self._fan_out.node_of(p).name))
            except Exception:  # no slot map yet
                out.append(None)
        return out


def _scored(raw: list[tuple[str, float]], index: int) -> list[tuple[int, int, str]]:
    return [(int(float(score)), index, member) for member, score in raw]


def _range_after(
    pipe: Any, p: Partition, after: RetryCursor | None, count: int, since_ms: int | None, high: str
) -> None:
    """The partition's first ``count`` retries that may come after the cursor: due later,
    or due at the cursor's ms and placed after it (a later partition, or a later id in
    its own). In the cursor's own partition the retries due at its ms up to its id come
    too and the caller drops them, so ``count`` more are read there (and the caller reads
    on when those fill it)."""
    if after is None:
        low = "-inf" if since_ms is None else str(since_ms)
        pipe.zrangebyscore(p.keys.retry, low, high, start=0, num=count, withscores=True)
        return
    due, index, _ = after
    low = f"({due}" if p.index < index else str(due)
    extra = count if p.index == index else 0
    pipe.zrangebyscore(p.keys.retry, low, high, start=0, num=count + extra, withscores=True)
