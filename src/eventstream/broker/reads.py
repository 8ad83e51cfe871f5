"""Reads of the whole state: the metrics snapshot, and the audit's reads (every place
an event can be, walked in pages, and atomic re-reads of what a walk found suspect).

Pages are read without a transaction (the state moves while a walk runs, and a walk
may take long); ``snapshot``, ``sums`` and every ``recheck_*`` read are one MULTI
each, so what they return holds at one instant. Status fields keep keys.py's format: ``q:<entry>``,
``r:<attempts>:<first>[:<key digest>]``, ``d:<dlq entry>``, ``k:<key digest>`` (parked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translated
from eventstream.broker.keys import GROUP, Keys


@dataclass(frozen=True, slots=True)
class Sums:
    """The counters and the sizes of every place, read at one instant."""

    counters: dict[str, int]
    length: int  # the stream's length: queued + pending
    scheduled: int  # the retry set's size
    dlq: int  # the dead-letter stream's length
    pending: int  # entries delivered and not yet acknowledged
    parked: int = 0  # events waiting behind their ordering key's busy events


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One entry of the consumer group's pending list."""

    entry: str
    consumer: str
    idle_ms: int  # since it was last delivered (or claimed)


@dataclass(frozen=True, slots=True)
class Target:
    """A status field read again, with whether what it points to holds its event."""

    status: str | None  # the field now (None: gone)
    holds: bool  # the stream entry, retry (score and body) or DLQ entry it names exists for it


@dataclass(frozen=True, slots=True)
class KeyLine:
    """One ordering key's records (keys.py: {p}:order, its line in {p}:lines, {p}:waiting)
    read together."""

    busy: bool  # {p}:order counts events of the key in progress
    parked: int  # events in its line
    first: str | None  # the first of them
    waiting: bool  # the waiting set names the key


def _after(entry: str | None) -> str:
    return "-" if entry is None else f"({entry}"


@translated(REDIS)  # like Broker: callers see EventStream's errors, never redis-py's
class StateReads:
    """Reads of one deployment's whole state, page by page (see the module docstring)."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self._r: Any = redis  # decodes to str, which redis-py's annotations cannot express
        self.keys = keys

    async def snapshot(
        self, now_ms: int, worker_ttl_ms: int
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Counters, gauges and histograms read in one MULTI: one instant, so what they
        show obeys the conservation law exactly, even while workers run."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.counters)
            pipe.hgetall(k.hist)
            pipe.xlen(k.stream)
            pipe.zcard(k.retry)
            pipe.xlen(k.dlq)
            pipe.zcount(k.workers, now_ms - worker_ttl_ms, "+inf")
            pipe.zcount(k.retry, "-inf", now_ms)
            pipe.hlen(k.parked)
            pipe.hlen(k.order)
            pipe.zrange(k.waiting, 0, 0, withscores=True)
            pipe.hlen(k.outbox)
            pipe.xinfo_groups(k.stream)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies[:-1]:
            if isinstance(reply, Exception):
                raise reply
        counters, hist, length, scheduled, dlq, workers, overdue, parked, busy, oldest, outbox, groups = (
            replies
        )
        pending, lag = 0, 0
        if not isinstance(groups, ResponseError):  # an error: no stream yet
            for group in groups:
                if group["name"] == GROUP:
                    pending = int(group["pending"])
                    # Redis derives lag from counters that a restart can leave off (after an
                    # AOF reload it read 73,154 with nothing queued): never more than queued.
                    queued = max(int(length) - pending, 0)
                    lag_value = group.get("lag")
                    lag = min(int(lag_value), queued) if lag_value is not None else queued
        elif "no such key" not in str(groups):
            raise groups
        gauges = {
            "queued": max(int(length) - pending, 0),
            "pending": pending,
            "scheduled": int(scheduled),
            "dlq": int(dlq),
            "workers": int(workers),
            "lag": lag,
            "overdue_retries": int(overdue),
            "parked": int(parked),
            "busy_keys": int(busy),
            # how long the event waiting longest behind its ordering key has waited
            "oldest_parked_ms": max(now_ms - int(oldest[0][1]), 0) if oldest else 0,
            # follow-ups recorded here for another partition, not yet relayed (not yet received)
            "outbox": int(outbox),
        }
        return (
            {f: int(v) for f, v in counters.items()},
            gauges,
            {f: int(v) for f, v in hist.items()},
        )

    async def sums(self) -> Sums:
        """Counters and sizes in one MULTI: exact at one instant."""
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.counters)
            pipe.xlen(k.stream)
            pipe.zcard(k.retry)
            pipe.xlen(k.dlq)
            pipe.xpending(k.stream, GROUP)
            pipe.hlen(k.parked)
            raw, length, scheduled, dlq, pending, parked = await pipe.execute(raise_on_error=False)
        for value in (raw, length, scheduled, dlq, parked):
            if isinstance(value, Exception):
                raise value
        if isinstance(pending, ResponseError):
            # No stream, or events queued before any worker made the group: none pending.
            if "NOGROUP" not in str(pending):
                raise pending
            count = 0
        elif isinstance(pending, Exception):
            raise pending
        else:
            count = int(pending["pending"])
        counters = {f: int(v) for f, v in raw.items()}
        return Sums(counters, int(length), int(scheduled), int(dlq), count, int(parked))

    async def pending(self, chunk: int) -> list[PendingEntry]:
        """Every pending entry, read ``chunk`` at a time (none without a stream or group)."""
        out: list[PendingEntry] = []
        low = "-"
        while True:
            try:
                part = await self._r.xpending_range(self.keys.stream, GROUP, min=low, max="+", count=chunk)
            except ResponseError:
                return out
            out += [
                PendingEntry(p["message_id"], p["consumer"], int(p["time_since_delivered"])) for p in part
            ]
            if len(part) < chunk:
                return out
            low = f"({part[-1]['message_id']}"

    async def heartbeats(self) -> dict[str, int]:
        """Each consumer's last heartbeat (ms)."""
        beats = await self._r.zrange(self.keys.workers, 0, -1, withscores=True)
        return {m: int(float(s)) for m, s in beats}

    async def retries_due(self, by_ms: int, examples: int) -> tuple[int, list[str]]:
        """How many retries were due by ``by_ms``, and the ids of the first ``examples``."""
        k = self.keys
        count = int(await self._r.zcount(k.retry, "-inf", by_ms))
        if not count:
            return 0, []
        ids: list[str] = await self._r.zrangebyscore(k.retry, "-inf", by_ms, start=0, num=examples)
        return count, ids[:examples]

    # ---- pages ---------------------------------------------------------------------

    async def stream_page(self, after: str | None, count: int) -> list[tuple[str, str]]:
        """(entry, event id) of up to ``count`` stream entries after ``after`` (None: from the start)."""
        part = await self._r.xrange(self.keys.stream, min=_after(after), max="+", count=count)
        return [(e, f.get("id", "")) for e, f in part]

    async def dlq_page(self, after: str | None, count: int) -> list[tuple[str, str]]:
        """(DLQ entry, event id) of up to ``count`` dead entries after ``after`` (None: from the start)."""
        part = await self._r.xrange(self.keys.dlq, min=_after(after), max="+", count=count)
        return [(e, f.get("id", "")) for e, f in part]

    async def retry_page(self, start: int, count: int) -> list[str]:
        """Event ids of the retry set by rank, ``count`` from ``start`` (earliest due first)."""
        ids: list[str] = await self._r.zrange(self.keys.retry, start, start + count - 1)
        return ids

    async def status_page(self, cursor: int, count: int) -> tuple[int, list[tuple[str, str]]]:
        """One HSCAN step of the status hash: (next cursor, 0 when done; (event id, status))."""
        cursor, part = await self._r.hscan(self.keys.status, cursor, count=count)
        return int(cursor), list(part.items())

    async def parked_page(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One HSCAN step of the parked bodies: (next cursor, 0 when done; event ids). The
        bodies come along (HSCAN leaves values out only from Redis 7.4): keep ``count`` modest."""
        cursor, part = await self._r.hscan(self.keys.parked, cursor, count=count)
        return int(cursor), list(part)

    async def stream_from(self, low: str, high: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` stream entries (entry id, fields) from ``low`` to ``high`` (XRANGE
        bounds), oldest first."""
        entries: list[tuple[str, dict[str, str]]] = await self._r.xrange(
            self.keys.stream, min=low, max=high, count=count
        )
        return entries

    async def in_flight(self, low: str, high: str, count: int) -> set[str]:
        """Which stream entries from ``low`` to ``high`` are delivered and not yet
        acknowledged (at most ``count`` looked at)."""
        try:
            pending = await self._r.xpending_range(self.keys.stream, GROUP, low, high, count)
        except ResponseError as exc:  # no worker has made the group yet: nothing in flight
            if "NOGROUP" not in str(exc):
                raise
            return set()
        return {p["message_id"] for p in pending}

    async def waiting_page(self, start: int, count: int) -> list[str]:
        """Digests of the keys with parked events by rank, ``count`` from ``start``
        (the longest waiting first)."""
        digests: list[str] = await self._r.zrange(self.keys.waiting, start, start + count - 1)
        return digests

    async def line_lengths(self, digests: Sequence[str]) -> list[int]:
        """How many events each ordering key's line holds (one round trip)."""
        if not digests:
            return []
        values = await self._r.hmget(self.keys.order, list(digests))
        return [order_line(v)[2] for v in values]

    async def statuses(self, event_ids: Sequence[str]) -> list[str | None]:
        """The status field of each event (None: none)."""
        found: list[str | None] = await self._r.hmget(self.keys.status, list(event_ids))
        return found

    async def retry_records(self, event_ids: Sequence[str]) -> list[tuple[str | None, bool]]:
        """For each id: its status field and whether its retry body is there (one round trip)."""
        k = self.keys
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.hmget(k.status, list(event_ids))
            pipe.hmget(k.retry_body, list(event_ids))
            statuses, bodies = await pipe.execute()
        return [(s, b is not None) for s, b in zip(statuses, bodies, strict=True)]

    # ---- atomic re-reads -----------------------------------------------------------

    async def recheck_entries(
        self, where: Literal["stream", "dlq"], entries: Sequence[tuple[str, str]]
    ) -> list[tuple[bool, str | None]]:
        """For each (entry, event id) of the stream or the DLQ, in one MULTI: whether the
        entry still exists, and its event's status field."""
        if not entries:
            return []
        k = self.keys
        key = k.stream if where == "stream" else k.dlq
        async with self._r.pipeline(transaction=True) as pipe:
            for e, i in entries:
                pipe.xrange(key, e, e)
                pipe.hget(k.status, i)
            replies = await pipe.execute()
        return [(bool(replies[2 * n]), replies[2 * n + 1]) for n in range(len(entries))]

    async def recheck_in_flight(self, entries: Sequence[str]) -> list[tuple[bool, int | None]]:
        """For each stream entry, in one MULTI: whether it still exists, and how long it
        has been idle when a consumer holds it (None: nobody does)."""
        if not entries:
            return []
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            for e in entries:
                pipe.xrange(k.stream, e, e)
                pipe.xpending_range(k.stream, GROUP, min=e, max=e, count=1)
            replies = await pipe.execute(raise_on_error=False)
        out: list[tuple[bool, int | None]] = []
        for n in range(len(entries)):
            found, pend = replies[2 * n], replies[2 * n + 1]
            idle_ms = int(pend[0]["time_since_delivered"]) if isinstance(pend, list) and pend else None
            out.append((isinstance(found, list) and bool(found), idle_ms))
        return out

    async def recheck_retries(self, event_ids: Sequence[str]) -> list[tuple[bool, str | None, bool]]:
        """For each id, in one MULTI: whether it is in the retry set, its status field, and
        whether its retry body is there."""
        if not event_ids:
            return []
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            for i in event_ids:
                pipe.zscore(k.retry, i)
                pipe.hget(k.status, i)
                pipe.hexists(k.retry_body, i)
            replies = await pipe.execute()
        return [
            (replies[3 * n] is not None, replies[3 * n + 1], bool(replies[3 * n + 2]))
            for n in range(len(event_ids))
        ]

    async def recheck_scheduled(self, event_ids: Sequence[str]) -> list[bool]:
        """For each id, in one MULTI: whether it is still in the retry set."""
        if not event_ids:
            return []
        async with self._r.pipeline(transaction=True) as pipe:
            for i in event_ids:
                pipe.zscore(self.keys.retry, i)
            scores = await pipe.execute()
        return [s is not None for s in scores]

    async def recheck_parked(
        self, items: Sequence[tuple[str, str | None]]
    ) -> list[tuple[bool, str | None, int]]:
        """For each (event id, its key's digest or None), in one MULTI: whether its parked
        body is there, its status field, and how many events the key's line holds (0
        without a digest)."""
        if not items:
            return []
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            for event_id, digest in items:
                pipe.hexists(k.parked, event_id)
                pipe.hget(k.status, event_id)
                if digest is not None:
                    pipe.hget(k.order, digest)
            replies = iter(await pipe.execute())
        out: list[tuple[bool, str | None, int]] = []
        for _, digest in items:
            parked, status = bool(next(replies)), next(replies)
            out.append((parked, status, 0 if digest is None else order_line(next(replies))[2]))
        return out

    async def recheck_keys(self, digests: Sequence[str]) -> list[KeyLine]:
        """Each ordering key's records, in one MULTI (see KeyLine)."""
        if not digests:
            return []
        k = self.keys
        async with self._r.pipeline(transaction=True) as pipe:
            for d in digests:
                pipe.hget(k.order, d)
                pipe.zscore(k.waiting, d)
            replies = await pipe.execute()
        lines = [order_line(v) for v in replies[::2]]
        # the first of each line: an example for a report, read after (not at the same instant)
        heads = [f"{d}:{head}" for d, (_, head, parked) in zip(digests, lines, strict=True) if parked]
        firsts = iter(await self._r.hmget(k.lines, heads) if heads else [])
        out = []
        for (active, _, parked), score in zip(lines, replies[1::2], strict=True):
            first = next(firsts) if parked else None
            out.append(
                KeyLine(active > 0, parked, first.partition(":")[2] if first else None, score is not None)
            )
        return out

    async def recheck_targets(self, items: Sequence[tuple[str, str]]) -> list[Target]:
        """For each (event id, status) pair, in one MULTI: the status field now, and whether
        what the pair's status points to exists and holds that event."""
        if not items:
            return []
        k = self.keys
        sizes: list[int] = []  # replies queued per item after its HGET: 0, 1 or 2
        async with self._r.pipeline(transaction=True) as pipe:
            for event_id, status in items:
                pipe.hget(k.status, event_id)
                kind, colon, ref = status.partition(":")
                if kind == "r" and colon:
                    pipe.zscore(k.retry, event_id)
                    pipe.hexists(k.retry_body, event_id)
                    sizes.append(2)
                elif kind in ("q", "d") and colon and _is_entry_id(ref):
                    pipe.xrange(k.stream if kind == "q" else k.dlq, ref, ref)
                    sizes.append(1)
                elif kind == "k" and colon:
                    pipe.hexists(k.parked, event_id)
                    sizes.append(-1)
                else:
                    sizes.append(0)
            replies = iter(await pipe.execute(raise_on_error=False))
        out: list[Target] = []
        for (event_id, _), size in zip(items, sizes, strict=True):
            now = next(replies)
            got = [next(replies) for _ in range(abs(size))]
            if size == -1:  # parked: its body is there
                holds = got[0] is True or got[0] == 1
            elif size == 2:
                holds = not any(isinstance(g, Exception) for g in got) and got[0] is not None and bool(got[1])
            elif size == 1:
                holds = isinstance(got[0], list) and bool(got[0]) and got[0][0][1].get("id") == event_id
            else:
                holds = False
            out.append(Target(now if isinstance(now, str) else None, holds))
        return out


def order_line(value: str | None) -> tuple[int, int, int]:
    """(released events, the line's first place, how many wait in it) of an ordering key's
    field of {p}:order ("<active>" or "<active>:<head>:<tail>"; None: an idle key)."""
    if value is None:
        return 0, 1, 0
    parts = value.split(":")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        active, head, tail = (int(p) for p in parts)
        return active, head, max(tail - head + 1, 0)
    return (int(value) if value.isdigit() else 0), 1, 0


def _is_entry_id(ref: str) -> bool:
    ms, _, seq = ref.partition("-")
    return ms.isdigit() and seq.isdigit()
