"""Broker: the Redis side of EventStream — reads, and the atomic scripts for writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translated
from eventstream.broker.entries import DeadEntry, Located, StreamEntry
from eventstream.broker.keys import GROUP, Keys
from eventstream.broker.reads import StateReads
from eventstream.broker.scripts import Completion, DeadLetter, Dedupe, ScheduledRetry, Scripts
from eventstream.broker.scripts import Outcome as IngestOutcome

log = structlog.get_logger("eventstream.broker")


@translated(REDIS)  # callers see EventStream's errors (RedisUnavailable...), never redis-py's
class Broker:
    """Redis operations for one deployment prefix.

    The client and the script registry are the broker's own: callers ask for intents.
    ``reads`` holds the reads of the whole state: the metrics snapshot and the audit's
    walk (reads.py).
    """

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self.keys = keys
        self._scripts = Scripts(redis, keys)
        self.reads = StateReads(redis, keys)

    @property
    def _r(self) -> Any:
        # The client decodes replies to str (decode_responses=True), which redis-py's
        # annotations cannot express; reads go through this untyped view.
        return self._redis

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (idempotent)."""
        try:
            await self._r.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        try:
            reply = await self._r.xreadgroup(
                GROUP, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        if not reply:
            return []
        # decode_responses: [[stream, [(entry, {field: value}), ...]]]
        _, entries = reply[0]
        return [StreamEntry.from_fields(e, f) for e, f in entries if f]

    # ---- counters and gauges -------------------------------------------------------

    async def counters(self) -> dict[str, int]:
        raw = await self._r.hgetall(self.keys.counters)
        return {k: int(v) for k, v in raw.items()}

    async def histograms(self) -> dict[str, int]:
        raw = await self._r.hgetall(self.keys.hist)
        return {k: int(v) for k, v in raw.items()}

    async def gauges(self, now_ms: int, worker_ttl_ms: int) -> dict[str, int]:
        _, gauges, _ = await self.snapshot(now_ms, worker_ttl_ms)
        return gauges

    async def snapshot(
        self, now_ms: int, worker_ttl_ms: int
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Counters, gauges and histograms read in one MULTI: one instant, so what they
        show obeys the conservation law exactly, even while workers run."""
        return await self.reads.snapshot(now_ms, worker_ttl_ms)

    async def heartbeat(self, consumer: str, now_ms: int) -> None:
        await self._r.zadd(self.keys.workers, {consumer: now_ms})

    async def report_overdue(self, consumer: str, report: str | None) -> None:
        """Record (or, with None, clear) what this consumer holds past its handlers' timeouts."""
        if report is None:
            await self._r.hdel(self.keys.overdue, consumer)
        else:
            await self._r.hset(self.keys.overdue, consumer, report)

    async def overdue_reports(self) -> dict[str, str]:
        return dict(await self._r.hgetall(self.keys.overdue))

    # ---- ingest, dead letters, jobs ------------------------------------------------

    async def enqueue(
        self, items: Sequence[tuple[str, bytes, Dedupe | str | None]], dedupe_window_ms: int
    ) -> list[tuple[str, IngestOutcome]]:
        """The ingest script for all items at once: dedupe, XADD, counters (one atomic step).
        Per item (the event id it stands for, new / duplicate / conflict)."""
        return await self._scripts.ingest(self._redis, items, dedupe_window_ms)

    async def replay_dead(self, dlq_entries: Sequence[str]) -> list[str]:
        """Send DLQ entries back to the stream as the same events; the ids replayed."""
        return await self._scripts.replay(self._redis, dlq_entries)

    async def delete_dead(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """Delete DLQ entries, given as (DLQ entry id, event id); the ids deleted."""
        return await self._scripts.delete_dead(self._redis, pairs)

    async def take_turn(self, job: str, owner: str, period_ms: int) -> bool:
        """Whether ``owner`` runs the periodic ``job`` this period (one owner per period)."""
        return await self._scripts.take_turn(self._redis, job, owner, period_ms)

    async def authorize_address(self, address: str, cost: int, rate: float, burst: int) -> list[Any]:
        """Charge an anonymous client address's bucket: the raw reply of authorize.lua."""
        return await self._scripts.authorize(
            self._redis, self.keys.addr_bucket(address), None, cost, rate=rate, burst=burst
        )

    async def authorize_key(self, key_id: str, cost: int, digest: str, scope: str) -> list[Any]:
        """Check an API key (``key_id`` already parsed) and charge its bucket, in one step:
        the raw reply of authorize.lua."""
        k = self.keys
        return await self._scripts.authorize(
            self._redis, k.key_bucket(key_id), k.api_key(key_id), cost, digest=digest, scope=scope
        )

    # ---- API keys (records, see keys.py; the token format is eventstream.auth.apikeys) ----

    async def claim_key_id(self, key_id: str, token_digest: str) -> bool:
        """Claim a new key's id with its token's digest; False when the id is taken."""
        return bool(await self._r.hsetnx(self.keys.api_key(key_id), "h", token_digest))

    async def store_key(self, key_id: str, fields: dict[str, str | int | float]) -> None:
        """Write a claimed key's fields and list it, in one MULTI."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.api_key(key_id), mapping=fields)
            pipe.sadd(self.keys.api_keys, key_id)
            await pipe.execute()

    async def key_record(self, key_id: str) -> dict[str, str]:
        """A key's raw record ({} when there is none); ``key_id`` already checked."""
        return dict(await self._r.hgetall(self.keys.api_key(key_id)))

    async def key_ids(self) -> set[str]:
        return set(await self._r.smembers(self.keys.api_keys))

    async def key_records(self, key_ids: Sequence[str]) -> list[dict[str, str]]:
        """The raw records of ``key_ids`` (checked), in order, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.hgetall(self.keys.api_key(key_id))
            return [dict(raw) for raw in await pipe.execute()]

    async def revoke_key(self, key_id: str, now_ms: int) -> bool:
        """Mark a key revoked at ``now_ms``; False when it already was (the first time stays)."""
        return bool(await self._r.hsetnx(self.keys.api_key(key_id), "x", now_ms))

    async def any_keys(self) -> bool:
        """Whether any API key was ever created (revoked ones count)."""
        return bool(await self._r.exists(self.keys.api_keys))

    async def ping(self) -> None:
        await self._r.ping()

    async def backlog(self, with_memory: bool) -> tuple[int, dict[str, Any]]:
        """Events queued, in flight or scheduled, and (``with_memory``) INFO memory."""
        k = self.keys
        async with self._r.pipeline(transaction=False) as pipe:
            pipe.xlen(k.stream)
            pipe.zcard(k.retry)
            if with_memory:
                pipe.info("memory")
            replies = await pipe.execute()
        return int(replies[0]) + int(replies[1]), (replies[2] if with_memory else {})

    # ---- the worker's transitions -------------------------------------------------

    async def settle(
        self,
        consumer: str,
        done: Sequence[Completion] = (),
        retries: Sequence[ScheduledRetry] = (),
        dead: Sequence[DeadLetter] = (),
        hist: Sequence[tuple[str, int]] = (),
    ) -> tuple[list[bool], list[bool], list[bool]]:
        """Record a group's outcomes in one round trip: complete, schedule_retry and
        dead_letter (each one atomic script, fenced on ``consumer``), for the kinds present;
        ``hist`` (field, amount) is added to the histograms with the completions.

        Returns per kind one flag per item: False when another worker owns the entry.
        """
        s = self._scripts
        kinds: list[int] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            if done:
                await s.complete(pipe, consumer, done, hist)
                kinds.append(0)
            if retries:
                await s.schedule_retry(pipe, consumer, retries)
                kinds.append(1)
            if dead:
                await s.dead_letter(pipe, consumer, dead)
                kinds.append(2)
            replies = await pipe.execute() if kinds else []
        flags: list[list[bool]] = [[], [], []]
        for kind, reply in zip(kinds, replies, strict=True):
            flags[kind] = [bool(int(x)) for x in reply]
        return flags[0], flags[1], flags[2]

    async def promote(self, now_ms: int, limit: int = 1000) -> int:
        """Move retries due by ``now_ms`` back into the stream, at most ``limit``; how many moved."""
        return await self._scripts.promote(self._redis, now_ms, limit)

    async def renew(self, consumer: str, entries: Sequence[str], now_ms: int) -> list[str]:
        """Extend the leases of ``entries`` and beat the heart; returns those no longer owned."""
        return await self._scripts.renew(self._redis, consumer, entries, now_ms)

    async def reclaim(
        self, consumer: str, idle_ms: int, count: int, max_deliveries: int, now_ms: int
    ) -> tuple[list[StreamEntry], list[tuple[str, str, int]]]:
        """Take over entries idle past ``idle_ms``, or dead-letter those delivered too often:
        (the entries now this consumer's, (event id, type, attempts) of the dead-lettered)."""
        claimed, dead = await self._scripts.reclaim(
            self._redis, consumer, idle_ms, count, max_deliveries, now_ms
        )
        return [StreamEntry.from_fields(e, f) for e, f in claimed], dead

    async def is_idle(self) -> bool:
        """Nothing queued, in flight or scheduled (one atomic read)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.keys.stream)
            pipe.zcard(self.keys.retry)
            length, scheduled = await pipe.execute()
        return int(length) == 0 and int(scheduled) == 0

    async def release(self, consumer: str, entries: list[str], idle_ms: int) -> None:
        """Mark this consumer's entries as idle for ``idle_ms``, so that the next reclaim by
        a live worker takes them at once (no delivery is counted: JUSTID)."""
        await self._r.xclaim(self.keys.stream, GROUP, consumer, 0, entries, idle=idle_ms, justid=True)

    async def leave(self, consumer: str) -> bool:
        """A worker that stops cleanly removes its heartbeat (and its consumer if idle);
        False when the consumer was kept because it still owns entries."""
        left = await self._scripts.leave(self._redis, consumer)
        await self._r.hdel(self.keys.overdue, consumer)
        return left

    # ---- where is an event ---------------------------------------------------------

    async def locate(self, event_id: str) -> Located | None:
        """Find a live event; None when Redis holds nothing for it (processed or unknown)."""
        k = self.keys
        for _ in range(5):  # the event may move while we look; look again
            status = await self._r.hget(k.status, event_id)
            if status is None:
                return None
            kind, _, ref = status.partition(":")
            if kind == "q":
                found = await self._r.xrange(k.stream, ref, ref)
                if not found:
                    continue
                entry = StreamEntry.from_fields(ref, found[0][1])
                owned = await self._r.xpending_range(k.stream, GROUP, ref, ref, 1)
                if owned:
                    return Located("processing", entry.envelope, entry.attempts + 1)
                return Located("queued", entry.envelope, entry.attempts)
            if kind == "r":
                async with self._r.pipeline(transaction=True) as pipe:
                    pipe.hget(k.retry_body, event_id)
                    pipe.zscore(k.retry, event_id)
                    body, due = await pipe.execute()
                if body is None:
                    continue
                attempts = int(ref.split(":", 1)[0] or 0)
                return Located("retrying", body, attempts, next_attempt_ms=int(due or 0))
            if kind == "d":
                dead = await self.dead_entry(ref)
                if dead is None:
                    continue
                return Located("dead", dead.envelope, dead.attempts, dead=dead)
        return None

    # ---- DLQ -----------------------------------------------------------------------

    async def dead_entry(self, dlq_entry: str) -> DeadEntry | None:
        found = await self._r.xrange(self.keys.dlq, dlq_entry, dlq_entry)
        return DeadEntry.from_fields(found[0][0], found[0][1]) if found else None

    async def dead_entry_of(self, event_id: str) -> DeadEntry | None:
        status = await self._r.hget(self.keys.status, event_id)
        if not status or not status.startswith("d:"):
            return None
        return await self.dead_entry(status[2:])

    async def list_dead(
        self, before: str | None, count: int, type_: str | None = None
    ) -> tuple[list[DeadEntry], str | None]:
        """Newest first. ``before`` is an exclusive DLQ entry id (the cursor)."""
        out: list[DeadEntry] = []
        high = f"({before}" if before else "+"
        while len(out) < count:
            chunk = await self._r.xrevrange(self.keys.dlq, max=high, min="-", count=max(count, 100))
            if not chunk:
                return out, None
            for entry, fields in chunk:
                high = f"({entry}"
                if type_ is None or fields.get("t") == type_:
                    out.append(DeadEntry.from_fields(entry, fields))
                    if len(out) == count:
                        break
        return out, out[-1].dlq_entry if out else None

    async def scan_dead(self, after: str, count: int) -> list[DeadEntry]:
        """Oldest first, strictly after the DLQ entry id ``after`` ("-" to start)."""
        low = "-" if after == "-" else f"({after}"
        chunk = await self._r.xrange(self.keys.dlq, min=low, max="+", count=count)
        return [DeadEntry.from_fields(e, f) for e, f in chunk]

    # ---- server checks -------------------------------------------------------------

    async def safety_warnings(self) -> list[str]:
        """Reasons this Redis could lose accepted events (empty when it looks safe)."""
        try:
            policy = (await self._r.config_get("maxmemory-policy")).get("maxmemory-policy")
            aof = (await self._r.config_get("appendonly")).get("appendonly")
            save = (await self._r.config_get("save")).get("save")
        except ResponseError:
            return [
                "cannot read the server's config (CONFIG is disabled): check by hand that "
                "maxmemory-policy is noeviction and appendonly is yes"
            ]
        warnings = []
        if policy != "noeviction":
            warnings.append(
                f"maxmemory-policy is {policy!r}: Redis may evict queued events under memory "
                "pressure; set it to 'noeviction'"
            )
        if aof != "yes":
            lost = "everything" if not save else "events since the last snapshot"
            warnings.append(f"appendonly is {aof!r}: a Redis restart loses {lost}; set appendonly yes")
        return warnings
