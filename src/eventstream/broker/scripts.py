"""Loads the .lua files beside this module; one typed async function per script, which
builds the script's KEYS and ARGV from named values (the layout each .lua file's header
documents, with its reply and counters).

Private to the broker: callers use Broker's intents. Every function takes a client
that may be a pipeline: then the call is queued and its reply comes back from
``pipeline.execute()``, so several transitions share one round trip. complete,
schedule_retry and dead_letter only queue (Broker.settle sends a group's together).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping, Sequence
from enum import IntEnum
from importlib.resources import files
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript

from eventstream.broker.keys import GROUP, Keys

Client = Redis | Pipeline | RedisCluster | ClusterPipeline
Arg = str | int | float | bytes


class Dedupe(NamedTuple):
    """What makes one ingested event idempotent."""

    key: str  # the client's idempotency key (header or body id)
    namespace: str | None = None  # see Keys.idem; None: anonymous use
    fingerprint: bytes = b""  # 8 characters naming the event's content; b"": any content repeats it


def record_of(event_id: str, fingerprint: bytes) -> bytes:
    """What a dedupe record keeps after its expiry (see keys.py): the event's UUID (16
    bytes) and its content's fingerprint (6 bytes; none when any content repeats it)."""
    uid = bytes.fromhex(event_id.replace("-", ""))
    if len(uid) != 16:
        raise ValueError(f"event id {event_id!r} is not a UUID")
    return uid + (base64.urlsafe_b64decode(fingerprint) if fingerprint else b"")


class Outcome(IntEnum):
    """What ingest did with one event (0 and 1 read as "duplicate: False/True")."""

    NEW = 0  # enqueued under the id it was given
    DUPLICATE = 1  # its key was seen with the same content: nothing enqueued
    CONFLICT = 2  # its key was seen with other content: nothing enqueued, nothing counted


# What Broker.enqueue takes per event: (event id, envelope, dedupe[, ordering key]).
IngestItem = tuple[str, bytes, Dedupe | str | None] | tuple[str, bytes, Dedupe | str | None, str | None]


class Completion(NamedTuple):
    """One success to record (complete.lua), with the follow-ups its handler emitted:
    (id, envelope, ordering key or None) each."""

    entry: str
    event_id: str
    skipped: bool  # already in the store: the handler did not run this time
    partition: int = 0
    order: str = ""  # the digest of its ordering key (StreamEntry.order)
    follow_ups: Sequence[tuple[str, bytes, str | None]] = ()


class Emitted(NamedTuple):
    """A follow-up recorded with its parent's completion (complete.lua)."""

    parent: int  # the 1-based place of its parent among the completions of the call
    event_id: str
    envelope: bytes
    order: str  # the digest of its ordering key; '' when none
    here: bool  # its partition is its parent's (else it goes to the outbox)


class ScheduledRetry(NamedTuple):
    """One failed try to schedule again (schedule_retry.lua)."""

    entry: str
    event_id: str
    due_ms: int
    attempts: int  # attempts made so far
    first_failure_ms: int
    envelope: bytes
    partition: int = 0
    order: str = ""
    reason: str = ""  # the failure ("Type: message"), kept while the retry waits


class DeadLetter(NamedTuple):
    """One event to move to the DLQ (dead_letter.lua)."""

    entry: str
    event_id: str
    type: str
    envelope: bytes
    attempts: int
    reason: str
    traceback: str
    first_failure_ms: int
    last_failure_ms: int
    handler_ran: bool
    partition: int = 0
    order: str = ""


def key_limits(limits: Mapping[str, int]) -> str:
    """The ``limits`` argument of complete, dead_letter and reclaim (order.lua): the
    key_concurrency of each event type's handler ("*": the others'), '' when all are 1."""
    if all(k == 1 for k in limits.values()):
        return ""
    return json.dumps(dict(limits), separators=(",", ":"), sort_keys=True)


# Scripts that act on a worker's own deliveries start with the shared fencing helpers;
# those that admit, finish or release events with an ordering key, with order.lua's.
_FENCED = frozenset({"complete", "schedule_retry", "dead_letter", "renew"})
_ORDERED = frozenset({"ingest", "replay", "complete", "dead_letter", "reclaim"})


def _read(name: str) -> str:
    return (files("eventstream.broker") / f"{name}.lua").read_text()


@functools.cache
def _source(name: str) -> str:
    parts = [*(["fence"] if name in _FENCED else []), *(["order"] if name in _ORDERED else []), name]
    return "".join(_read(part) for part in parts)


class Scripts:
    """The registered scripts of one Redis connection pool and key prefix."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self.keys = keys
        self._s: dict[str, AsyncScript] = {
            name: redis.register_script(_source(name))
            for name in (
                "ingest",
                "complete",
                "schedule_retry",
                "dead_letter",
                "promote",
                "reclaim",
                "renew",
                "replay",
                "delete_dead",
                "count_dead",
                "take_turn",
                "authorize",
                "leave",
            )
        }

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Arg], client: Client) -> Any:
        """Run the script, or with a pipeline queue it (its reply comes from execute()).

        A plain pipeline loads the scripts it lacks before it runs (redis-py's
        AsyncScript), and a client retries once after loading. A cluster pipeline does
        neither, and a node that never ran a script, or a replica promoted after a
        failover, answers NOSCRIPT: there the script's text goes with each call (EVAL;
        the server caches what it compiled by the text's digest)."""
        if isinstance(client, ClusterPipeline):
            return client.eval(_source(name), len(keys), *keys, *args)
        return await self._s[name](keys=list(keys), args=list(args), client=client)

    async def ingest(
        self,
        client: Client,
        events: Sequence[tuple[str, bytes, tuple[str, bytes] | None, str | None]],
        dedupe_window_ms: int,
    ) -> Any:
        """Enqueue (id, envelope, dedupe, order) into this partition; dedupe is (the
        idempotency key's digest, see keys.idem_digest; the content's fingerprint) or None,
        order the ordering key's digest (keys.order_digest) or None. An event with a dedupe
        must have a UUID for its id (ingest's are). The raw reply (with a pipeline: queued;
        its reply comes from execute()), which ``ingest_results`` reads."""
        k = self.keys
        keys = [k.stream, k.status, k.counters, *k.ordering]
        keyed: list[Arg] = []
        fields: list[Arg] = []
        records: list[Arg] = []
        prints: list[Arg] = []
        ordered: list[Arg] = []
        for i, (event_id, _, dedupe, order) in enumerate(events):
            if order is not None:
                ordered += (i, order)
            if dedupe is None:
                continue
            digest, fingerprint = dedupe
            record = k.dedupe_of(digest)
            keys += (record.hash, k.idem_of(digest))
            keyed.append(i)
            fields.append(record.field)
            records.append(record_of(event_id, fingerprint))
            prints.append(fingerprint)
        args: list[Arg] = [dedupe_window_ms, len(events), len(keyed), *keyed, *fields, *records, *prints]
        args += (len(ordered) // 2, *ordered)
        for event_id, envelope, _, _ in events:
            args += (event_id, envelope)
        return await self._call("ingest", keys, args, client)

    @staticmethod
    def ingest_results(
        events: Sequence[tuple[str, bytes, Any, Any]], flat: Sequence[Any]
    ) -> list[tuple[str, Outcome]]:
        """Per event of an ingest call: the id it goes by (the first event's for a
        duplicate or a conflict) and what was done."""
        results = [(event[0], Outcome.NEW) for event in events]
        for j in range(0, len(flat), 3):
            results[int(flat[j])] = (str(flat[j + 1]), Outcome(int(flat[j + 2])))
        return results

    async def complete(
        self,
        pipe: Pipeline,
        consumer: str,
        done: Sequence[Completion],
        hist: Sequence[tuple[str, int]],
        limits: str = "",
        emitted: Sequence[Emitted] = (),
    ) -> None:
        """``limits``: the handlers' key_concurrency (see key_limits)."""
        k = self.keys
        args: list[Arg] = [GROUP, consumer, limits, len(done)]
        for c in done:
            args += [c.entry, c.event_id, int(c.skipped), c.order]
        args.append(len(emitted))
        for e in emitted:
            args += [e.parent, e.event_id, e.envelope, e.order, int(e.here)]
        for field, amount in hist:
            args += [field, amount]
        keys = [k.stream, k.status, k.counters, k.hist, *k.ordering, k.emits, k.outbox]
        await self._call("complete", keys, args, pipe)

    async def schedule_retry(self, pipe: Pipeline, consumer: str, retries: Sequence[ScheduledRetry]) -> None:
        k = self.keys
        args: list[Arg] = [GROUP, consumer, len(retries)]
        for r in retries:
            args += [r.entry, r.event_id, r.due_ms, r.attempts, r.first_failure_ms, r.order]
        args += [r.envelope for r in retries]
        args += [r.reason for r in retries]
        keys = [k.stream, k.status, k.counters, k.retry, k.retry_body, k.retry_error]
        await self._call("schedule_retry", keys, args, pipe)

    async def dead_letter(
        self, pipe: Pipeline, consumer: str, dead: Sequence[DeadLetter], limits: str = ""
    ) -> None:
        k = self.keys
        args: list[Arg] = [GROUP, consumer, limits, len(dead)]
        for d in dead:
            args += [
                d.entry,
                d.event_id,
                d.type,
                d.envelope,
                d.attempts,
                d.reason,
                d.traceback,
                d.first_failure_ms,
                d.last_failure_ms,
                int(d.handler_ran),
                d.order,
            ]
        keys = [k.stream, k.status, k.counters, k.dlq, *k.ordering, k.emits]
        await self._call("dead_letter", keys, args, pipe)

    async def promote(self, client: Client, now_ms: int, limit: int) -> Any:
        """How many moved (the raw reply; with a pipeline, queued)."""
        k = self.keys
        keys = [k.stream, k.status, k.retry, k.retry_body, k.retry_error]
        return await self._call("promote", keys, [now_ms, limit], client)

    async def reclaim(
        self,
        client: Client,
        consumer: str,
        idle_ms: int,
        count: int,
        max_deliveries: int,
        now_ms: int,
        limits: str = "",
    ) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[str, str, int]]]:
        """(claimed entries with their fields, (event id, type, attempts) of the dead-lettered)."""
        k = self.keys
        keys = [k.stream, k.status, k.counters, k.dlq, *k.ordering, k.emits]
        args: list[Arg] = [GROUP, consumer, idle_ms, count, max_deliveries, now_ms, limits]
        claimed, dead = await self._call("reclaim", keys, args, client)
        out: list[tuple[str, dict[str, str]]] = []
        for entry, fields in claimed:
            out.append((str(entry), dict(zip(fields[::2], fields[1::2], strict=True))))
        return out, [(str(i), str(t), int(a)) for i, t, a in dead]

    async def renew(self, client: Client, consumer: str, entries: Sequence[str], now_ms: int) -> Any:
        """The entries no longer owned (the raw reply; with a pipeline, queued)."""
        k = self.keys
        args: list[Arg] = [GROUP, consumer, now_ms, *entries]
        return await self._call("renew", [k.stream, k.workers], args, client)

    async def replay(self, client: Client, dlq_entries: Sequence[str]) -> Any:
        """The ids replayed (the raw reply; with a pipeline, queued)."""
        k = self.keys
        keys = [k.stream, k.status, k.counters, k.dlq, *k.ordering]
        return await self._call("replay", keys, list(dlq_entries), client)

    async def delete_dead(self, client: Client, pairs: Sequence[tuple[str, str]]) -> Any:
        """pairs: (DLQ entry id, event id). The ids deleted (the raw reply; with a
        pipeline, queued)."""
        k = self.keys
        args: list[Arg] = [x for pair in pairs for x in pair]
        return await self._call("delete_dead", [k.status, k.counters, k.dlq], args, client)

    async def count_dead(self, client: Client, start: str, end: str, n: int, match: Sequence[Arg]) -> Any:
        """Of at most ``n`` DLQ entries from ``start`` to ``end`` (XRANGE bounds), how many
        match ``match`` (type, text, since, until, ids wanted; see count_dead.lua): the raw
        reply (with a pipeline, queued)."""
        return await self._call("count_dead", [self.keys.dlq], [start, end, n, *match], client)

    async def authorize(
        self,
        client: Client,
        bucket: str,
        record: str | None,
        cost: int,
        *,
        rate: float = 0.0,
        burst: int = 0,
        digest: str = "",
        scope: str = "",
    ) -> list[Any]:
        """Check an API key (``record`` set) and charge its bucket, or charge an anonymous
        bucket at ``rate``/``burst``: the raw reply, see authorize.lua."""
        keys = [bucket] if record is None else [bucket, record]
        args: list[Arg] = [cost, rate, burst, digest, scope]
        return list(await self._call("authorize", keys, args, client))

    async def leave(self, client: Client, consumer: str) -> Any:
        """Drop the heartbeat, and the consumer when nothing is pending for it; 0 when the
        consumer was kept because it still owns entries (see leave.lua). The raw reply;
        with a pipeline, queued."""
        k = self.keys
        return await self._call("leave", [k.stream, k.workers], [GROUP, consumer], client)

    async def take_turn(self, client: Client, job: str, owner: str, period_ms: int) -> bool:
        """Whether ``owner`` runs ``job`` this period (at most one claimant per period)."""
        return bool(await self._call("take_turn", [self.keys.lease(job)], [owner, period_ms], client))
