"""Broker: the Redis side of EventStream — reads, and the atomic scripts for writes.

A deployment has N partitions (keys.py); every transition is one script inside one
partition. The broker routes each call to its partition and fans out the calls that
concern the whole deployment, one command per partition in one pipeline (on a Redis
Cluster, redis-py sends a pipeline's commands to their nodes side by side).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translate, translated
from eventstream.broker.durability import Durability, check_confirmed, wait_tail
from eventstream.broker.emits import Emits, emitted
from eventstream.broker.entries import (
    DeadEntry,
    DeadFilter,
    DeadTally,
    Located,
    Ref,
    StreamEntry,
    dead_position,
    position_key,
    retry_record,
)
from eventstream.broker.fanout import FanOut, Partition, gather, raise_errors
from eventstream.broker.keys import GROUP, Keys, Layout, idem_digest, order_digest
from eventstream.broker.reading import Reader
from eventstream.broker.reads import StateReads
from eventstream.broker.samples import Samples
from eventstream.broker.scripts import (
    Completion,
    DeadLetter,
    Dedupe,
    IngestItem,
    ScheduledRetry,
    Scripts,
)
from eventstream.broker.scripts import Outcome as IngestOutcome
from eventstream.broker.views import Views
from eventstream.errors import ConfigError, PartitionCountMismatch, PartlyEnqueued, Unconfirmed

log = structlog.get_logger("eventstream.broker")


@translated(REDIS)  # callers see EventStream's errors (RedisUnavailable...), never redis-py's
class Broker:
    """Redis operations for one deployment: its own keys and its partitions' (keys.py).

    The client and the script registry are the broker's own: callers ask for intents.
    Each partition's ``reads`` holds the reads of its whole state: the metrics snapshot
    and the audit's walk (reads.py); ``history`` is the deployment's metrics history
    (samples.py); ``views`` the dashboard's bounded reads over every partition (views.py).
    """

    def __init__(
        self, redis: Redis | RedisCluster, keys: Keys | Layout, durability: Durability | None = None
    ) -> None:
        self._redis = redis
        self.durability = durability  # what enqueue waits for (see Durability)
        self.layout = keys if isinstance(keys, Layout) else Layout(keys.prefix)
        self.keys = self.layout.deployment  # the deployment's own keys
        self.partitions = tuple(
            Partition(i, k, Scripts(redis, k), StateReads(redis, k)) for i, k in enumerate(self.layout.parts)
        )
        self._scripts = Scripts(redis, self.keys)  # the deployment's own: API keys, limits, leases
        self.history = Samples(redis, self.keys)
        self._fan_out = FanOut(redis, self.partitions)
        self._reader = Reader(self._fan_out, self.ensure_group)
        self._emits = Emits(self._fan_out, self.layout, self.enqueue)
        self.views = Views(self._fan_out, self.keys)
        self._cluster = self._fan_out.cluster
        self._turn = 0  # round robin: unkeyed ingest calls, reclaim's first partition
        self._count_checked = False  # claim_partitions succeeded (else enqueue calls it first)

    async def aclose(self) -> None:
        """Close the broker's connections."""
        await self._redis.aclose()

    @property
    def _r(self) -> Any:
        # The client decodes replies to str (decode_responses=True), which redis-py's
        # annotations cannot express; reads go through this untyped view.
        return self._redis

    def _next_turn(self) -> int:
        self._turn = (self._turn + 1) % len(self.partitions)
        return self._turn

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """Up to ``count`` new entries for ``consumer``, waiting up to ``block_ms`` for one
        (reading.py: with several partitions one entry per partition may come beyond
        ``count``, when the read had to block)."""
        return await self._reader.read_new(consumer, count, block_ms)

    async def end_reads(self, consumer: str) -> list[StreamEntry]:
        """What ``consumer``'s reads still open delivered (reading.py): entries now pending
        for it, which the caller must run or release."""
        return await self._reader.end_reads(consumer)

    async def ensure_group(self) -> None:
        """Create each partition's stream and its consumer group if missing (idempotent),
        the partition count checked first (claim_partitions)."""
        if not self._count_checked:
            await self.claim_partitions()
        for replies in await self._fan_out(
            lambda pipe, p: pipe.xgroup_create(p.keys.stream, GROUP, id="0", mkstream=True)
        ):
            for reply in replies:
                if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                    raise reply

    # ---- counters and gauges -------------------------------------------------------

    async def counters(self) -> dict[str, int]:
        return _sum_maps(
            r[0] for r in await self._fan_out(lambda pipe, p: pipe.hgetall(p.keys.counters), atomic=False)
        )

    async def histograms(self) -> dict[str, int]:
        return _sum_maps(r[0] for r in await self._fan_out(lambda pipe, p: pipe.hgetall(p.keys.hist)))

    async def gauges(self, now_ms: int, worker_ttl_ms: int) -> dict[str, int]:
        _, gauges, _ = await self.snapshot(now_ms, worker_ttl_ms)
        return gauges

    async def snapshot(
        self, now_ms: int, worker_ttl_ms: int
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Counters, gauges and histograms of the whole deployment. Each partition's are
        read in one MULTI (one instant), so each obeys the conservation law exactly, and
        so does their sum: no event ever moves between partitions."""
        return merge_snapshots(await self.snapshots(now_ms, worker_ttl_ms))

    async def snapshots(
        self, now_ms: int, worker_ttl_ms: int
    ) -> list[tuple[dict[str, int], dict[str, int], dict[str, int]]]:
        """``snapshot`` of each partition, in partition order."""
        return list(await gather([p.reads.snapshot(now_ms, worker_ttl_ms) for p in self.partitions]))

    async def oldest_waiting_ms(self, now_ms: int) -> int:
        """How long the queued event delivered to no worker yet has waited the longest, in
        any partition (ms; 0: none waits)."""
        return await self.views.oldest_queued_ms(now_ms)

    async def heartbeat(self, consumer: str, now_ms: int) -> None:
        for replies in await self._fan_out(lambda pipe, p: pipe.zadd(p.keys.workers, {consumer: now_ms})):
            raise_errors(replies)

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
        self, items: Sequence[IngestItem], dedupe_window_ms: int
    ) -> list[tuple[str, IngestOutcome]]:
        """The ingest script for the items (event id, envelope, dedupe[, ordering key]):
        dedupe, XADD or park behind the ordering key's busy events, counters (one atomic
        step per partition). An item with an ordering key goes to the partition its key's
        digest names (its dedupe record too: the dedupe window of an item with an ordering
        key is its key's partition's); else one with an idempotency key goes to the
        partition that key's digest names, so its dedupe and its enqueue are one step; the
        others of a call go together to the next partition in turn. Per item (the event id
        it stands for, new / duplicate / conflict), in order.

        With ``durability`` set, the replicas (or AOF fsyncs) it asks for are waited for
        on the connection that wrote, in the same round trip; fewer in time raise
        Unconfirmed, whose ``results`` are the items' outcomes (they stay queued). When
        some partitions' scripts fail and others run, PartlyEnqueued says which items
        were enqueued.

        Nothing is enqueued before the partition count was checked (claim_partitions)."""
        if not self._count_checked:
            await self.claim_partitions()
        n = len(self.partitions)
        routed: list[tuple[str, bytes, tuple[str, bytes] | None, str | None]] = []
        where: list[int] = []
        plain = self._next_turn() if n > 1 else 0
        for item in items:
            event_id, envelope, dedupe = item[0], item[1], item[2]
            ordering = item[3] if len(item) > 3 else None
            order = None if ordering is None else order_digest(ordering)
            if dedupe is None:
                routed.append((event_id, envelope, None, order))
                where.append(self.layout.partition_of(order) if order and n > 1 else plain)
                continue
            if isinstance(dedupe, str):
                dedupe = Dedupe(dedupe)
            digest = idem_digest(dedupe.key, dedupe.namespace)
            routed.append((event_id, envelope, (digest, dedupe.fingerprint), order))
            where.append(self.layout.partition_of(order or digest) if n > 1 else 0)
        if n == 1 and self.durability is None:
            p = self.partitions[0]
            reply = await p.scripts.ingest(self._redis, routed, dedupe_window_ms)
            return p.scripts.ingest_results(routed, reply)
        groups: dict[int, list[int]] = {}
        for i, p_index in enumerate(where):
            groups.setdefault(p_index, []).append(i)
        parts = [self.partitions[i] for i in groups]

        async def queue(pipe: Any, part: Partition) -> None:
            await part.scripts.ingest(pipe, [routed[i] for i in groups[part.index]], dedupe_window_ms)

        d = self.durability
        replies, tails = await self._fan_out.run(queue, parts=parts, tail=None if d is None else wait_tail(d))
        results: list[tuple[str, IngestOutcome] | None] = [None] * len(items)
        failed: Exception | None = None
        ok = [False] * len(parts)
        for n, (part, [reply]) in enumerate(zip(parts, replies, strict=True)):
            if isinstance(reply, Exception):  # this partition only: the others ran
                failed = failed or reply
                continue
            ok[n] = True
            chosen = groups[part.index]
            answers = part.scripts.ingest_results([routed[i] for i in chosen], reply)
            for i, answer in zip(chosen, answers, strict=True):
                results[i] = answer
        if failed is not None and len(parts) == 1:
            raise failed
        done = [r for r in results if r is not None]
        # the confirmations of every pipeline that ran (a node that failed wrote nothing)
        confirmations = [r for indexes, rs in tails if any(ok[i] for i in indexes) for r in rs]
        if failed is None:
            if d is not None:
                check_confirmed(d, confirmations, done)
            return done
        confirmed, why = True, ""
        if d is not None:
            try:
                check_confirmed(d, confirmations, done)
            except Unconfirmed as exc:
                confirmed, why = False, exc.detail
        error = translate(failed, REDIS)
        raise PartlyEnqueued(error if isinstance(error, Exception) else failed, results, confirmed, why)

    async def replay_dead(self, positions: Sequence[str]) -> list[str]:
        """Send DLQ entries (by position, DeadEntry.position) back to their partitions'
        streams as the same events; the ids replayed."""
        return await self._dead_script("replay", [(pos, None) for pos in positions])

    async def delete_dead(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """Delete DLQ entries, given as (DLQ position, event id); the ids deleted."""
        return await self._dead_script("delete_dead", pairs)

    async def _dead_script(self, name: str, pairs: Sequence[tuple[str, str | None]]) -> list[str]:
        groups: dict[int, list[tuple[str, str | None]]] = {}
        for position, event_id in pairs:
            key = position_key(position)
            if key is None or key[2] >= len(self.partitions):
                continue  # no such entry
            groups.setdefault(key[2], []).append((f"{key[0]}-{key[1]}", event_id))
        parts = [self.partitions[i] for i in groups]

        async def queue(pipe: Any, part: Partition) -> None:
            chosen = groups[part.index]
            if name == "replay":
                await part.scripts.replay(pipe, [e for e, _ in chosen])
            else:
                await part.scripts.delete_dead(pipe, [(e, i or "") for e, i in chosen])

        out: list[str] = []
        for [reply] in await self._fan_out(queue, parts=parts):
            if isinstance(reply, Exception):
                raise reply
            out += [str(e) for e in reply]
        return out

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

    # ---- dashboard sessions (keys.py: ui:session) ----

    async def open_session(self, cookie_digest: str, fields: dict[str, str | int], ttl_s: int) -> None:
        """Record a signed-in dashboard session that expires after ``ttl_s``."""
        key = self.keys.ui_session(cookie_digest)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def session(self, cookie_digest: str) -> dict[str, str]:
        """A session's record; {} when it never existed, ended or expired."""
        return dict(await self._r.hgetall(self.keys.ui_session(cookie_digest)))

    async def close_session(self, cookie_digest: str) -> None:
        await self._r.delete(self.keys.ui_session(cookie_digest))

    async def any_keys(self) -> bool:
        """Whether any API key was ever created (revoked ones count)."""
        return bool(await self._r.exists(self.keys.api_keys))

    async def ping(self) -> None:
        await self._r.ping()

    async def backlog(self, with_memory: bool) -> tuple[int, dict[str, Any]]:
        """Events queued (parked ones and follow-ups in an outbox too), in flight or
        scheduled, and (``with_memory``) INFO memory."""
        total = 0
        for replies in await self._fan_out(_queue_sizes):
            raise_errors(replies)
            total += sum(int(r) for r in replies)
        return total, (await self._memory() if with_memory else {})

    async def _memory(self) -> dict[str, Any]:
        """INFO memory; on a cluster, the primary nearest its maxmemory (each holds its
        own partitions, and the first one full refuses writes)."""
        if not self._cluster:
            return dict(await self._r.info("memory"))
        reply = await self._r.info("memory", target_nodes=RedisCluster.PRIMARIES)
        nodes: list[dict[str, Any]] = [reply] if "used_memory" in reply else list(reply.values())
        return max(nodes, key=_fullness)

    # ---- the partition count -------------------------------------------------------

    async def claim_partitions(self) -> None:
        """Record the partition count at the first start, or check it against the one
        recorded. A deployment that still holds events (queued, in flight, scheduled or
        dead) keeps its count: each event's keys are in its partition, and another count
        would leave them where nothing looks. An empty deployment may change it."""
        want = len(self.partitions)
        for _ in range(5):  # another process may be doing the same: look again
            recorded = await self._r.get(self.keys.partitions)
            have = int(recorded) if recorded else 1  # none: a deployment made before partitions
            if have == want:
                if recorded is None:
                    await self._r.set(self.keys.partitions, want, nx=True)
                    continue
                self._count_checked = True
                return
            old = Broker(self._redis, Layout(self.layout.deployment.prefix, have))
            held = await old.held_events()
            if held:
                raise PartitionCountMismatch(
                    f"this deployment (key prefix {self.keys.prefix!r}) has {have} partition(s), "
                    f"recorded in Redis, and EVENTSTREAM_PARTITIONS is {want}: set "
                    f"EVENTSTREAM_PARTITIONS={have}. It still holds {held} event(s) (queued, in "
                    "flight, scheduled or dead-lettered), so its count cannot change now: to "
                    f"change it, stop the producers, let the workers drain it with {have} "
                    "partition(s), replay or delete its dead letters, then start with the new count"
                )
            swapped = await self._r.set(self.keys.partitions, want, get=True)
            if swapped == recorded:
                if recorded is not None:  # else a first start
                    log.warning("partition count changed", prefix=self.keys.prefix, was=have, now=want)
                self._count_checked = True
                return
        raise ConfigError("the partition count kept changing while this process started; start it again")

    async def held_events(self) -> int:
        """Events anywhere in this layout's partitions: queued, in flight, scheduled, dead."""
        total = 0
        for replies in await self._fan_out(_queue_sizes_and_dead):
            raise_errors(replies)
            total += sum(int(r) for r in replies)
        return total

    async def dead_count(self) -> int:
        """How many events the DLQ holds (XLEN of each partition's)."""
        total = 0
        for replies in await self._fan_out(lambda pipe, p: pipe.xlen(p.keys.dlq), atomic=False):
            raise_errors(replies)
            total += sum(int(r) for r in replies)
        return total

    # ---- the worker's transitions -------------------------------------------------

    async def settle(
        self,
        consumer: str,
        done: Sequence[Completion] = (),
        retries: Sequence[ScheduledRetry] = (),
        dead: Sequence[DeadLetter] = (),
        hist: Sequence[tuple[str, int]] = (),
        limits: str = "",
    ) -> tuple[list[bool], list[bool], list[bool]]:
        """Record a group's outcomes in one round trip: per partition, complete,
        schedule_retry and dead_letter (each one atomic script, fenced on ``consumer``), for
        the kinds present; ``hist`` (field, amount) is added to the histograms with the
        completions (of the first partition that has some). ``limits`` (scripts.key_limits)
        says how many events of one ordering key may run at once: completing or
        dead-lettering one releases the next of its key (order.lua).

        Returns per kind one flag per item, in order: False when another worker owns the entry.
        """
        kinds: tuple[Sequence[Any], ...] = (done, retries, dead)
        by_part: dict[int, list[list[int]]] = {}
        for kind, items in enumerate(kinds):
            for i, item in enumerate(items):
                by_part.setdefault(item.partition, [[], [], []])[kind].append(i)
        parts = [self.partitions[p] for p in sorted(by_part)]
        first_done = next((p for p in parts if by_part[p.index][0]), None)

        async def queue(pipe: Any, part: Partition) -> None:
            chosen, s = by_part[part.index], part.scripts
            if chosen[0]:
                mine = [done[i] for i in chosen[0]]
                follow_ups = emitted(self.layout, part.index, mine)
                await s.complete(pipe, consumer, mine, hist if part is first_done else (), limits, follow_ups)
            if chosen[1]:
                await s.schedule_retry(pipe, consumer, [retries[i] for i in chosen[1]])
            if chosen[2]:
                await s.dead_letter(pipe, consumer, [dead[i] for i in chosen[2]], limits)

        flags: list[list[bool]] = [[False] * len(items) for items in kinds]
        for part, replies in zip(parts, await self._fan_out(queue, parts=parts), strict=True):
            raise_errors(replies)
            present = [kind for kind in range(3) if by_part[part.index][kind]]
            for kind, reply in zip(present, replies, strict=True):
                for i, x in zip(by_part[part.index][kind], reply, strict=True):
                    flags[kind][i] = bool(int(x))
        return flags[0], flags[1], flags[2]

    async def stage_follow_ups(self, items: Sequence[tuple[int, str, str]]) -> None:
        """Stage returned handlers' follow-ups before their store rows: (partition, parent
        event id, the follow-ups as eventstream.worker.follow_ups.stage wrote them); see emits.py."""
        await self._emits.stage(items)

    async def staged_follow_ups(self, refs: Sequence[tuple[int, str]]) -> dict[str, str]:
        """The follow-ups staged for (partition, parent event id), by parent id."""
        return await self._emits.staged(refs)

    async def relay(self, dedupe_window_ms: int, limit: int = 1000) -> int:
        """Move follow-ups recorded in another partition's outbox into their own; how many
        moved (``limit`` per partition at most: call again while it is that many)."""
        return await self._emits.relay(dedupe_window_ms, limit)

    async def promote(self, now_ms: int, limit: int = 1000) -> int:
        """Move retries due by ``now_ms`` back into their streams, at most ``limit`` per
        partition; how many moved (``limit`` or more: call again, some may be left)."""
        total = 0
        for [reply] in await self._fan_out(lambda pipe, p: p.scripts.promote(pipe, now_ms, limit)):
            if isinstance(reply, Exception):
                raise reply
            total += int(reply)
        return total

    async def renew(self, consumer: str, refs: Sequence[Ref], now_ms: int) -> list[Ref]:
        """Extend the leases of ``refs`` (partition, entry) and beat the heart in every
        partition; returns the refs no longer owned."""
        groups: dict[int, list[str]] = {p.index: [] for p in self.partitions}
        for p_index, entry in refs:
            groups[p_index].append(entry)
        lost: list[Ref] = []
        replies = await self._fan_out(
            lambda pipe, p: p.scripts.renew(pipe, consumer, groups[p.index], now_ms)
        )
        for part, [reply] in zip(self.partitions, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            lost += [(part.index, str(e)) for e in reply]
        return lost

    async def reclaim(
        self, consumer: str, idle_ms: int, count: int, max_deliveries: int, now_ms: int, limits: str = ""
    ) -> tuple[list[StreamEntry], list[tuple[str, str, int]]]:
        """Take over entries idle past ``idle_ms``, or dead-letter those delivered too often,
        partition by partition (starting with the next in turn) while ``count`` allows:
        (the entries now this consumer's, (event id, type, attempts) of the dead-lettered).
        ``limits`` as in settle."""
        n = len(self.partitions)
        start = self._next_turn() if n > 1 else 0
        claimed: list[StreamEntry] = []
        dead: list[tuple[str, str, int]] = []
        for i in range(n):
            if len(claimed) >= count:
                break
            part = self.partitions[(start + i) % n]
            got, lost = await part.scripts.reclaim(
                self._redis, consumer, idle_ms, count - len(claimed), max_deliveries, now_ms, limits
            )
            claimed += [StreamEntry.from_fields(e, f, part.index) for e, f in got]
            dead += lost
        return claimed, dead

    async def is_idle(self) -> bool:
        """Nothing queued (or parked, or in an outbox), in flight or scheduled (each
        partition read at one instant)."""
        for replies in await self._fan_out(_queue_sizes, atomic=True):
            raise_errors(replies)
            if any(int(r) for r in replies):
                return False
        return True

    async def release(self, consumer: str, refs: Sequence[Ref], idle_ms: int) -> None:
        """Mark this consumer's entries as idle for ``idle_ms``, so that the next reclaim by
        a live worker takes them at once (no delivery is counted: JUSTID)."""
        groups: dict[int, list[str]] = {}
        for p_index, entry in refs:
            groups.setdefault(p_index, []).append(entry)
        parts = [self.partitions[p] for p in groups]
        for replies in await self._fan_out(
            lambda pipe, p: pipe.xclaim(
                p.keys.stream, GROUP, consumer, 0, groups[p.index], idle=idle_ms, justid=True
            ),
            parts=parts,
        ):
            raise_errors(replies)

    async def leave(self, consumer: str) -> bool:
        """A worker that stops cleanly removes its heartbeat (and its consumer if idle);
        False when the consumer was kept because it still owns entries (in any partition)."""
        left = True
        for [reply] in await self._fan_out(lambda pipe, p: p.scripts.leave(pipe, consumer)):
            if isinstance(reply, Exception):
                raise reply
            left = left and bool(reply)
        await self._r.hdel(self.keys.overdue, consumer)
        return left

    # ---- where is an event ---------------------------------------------------------

    async def _status(self, event_id: str) -> tuple[Partition, str] | None:
        """The partition holding a live event, and its status field there."""
        if len(self.partitions) == 1:
            status = await self._r.hget(self.partitions[0].keys.status, event_id)
            return None if status is None else (self.partitions[0], status)
        for part, [status] in zip(
            self.partitions,
            await self._fan_out(lambda pipe, p: pipe.hget(p.keys.status, event_id)),
            strict=True,
        ):
            if isinstance(status, Exception):
                raise status
            if status is not None:
                return part, status
        return None

    async def locate(self, event_id: str) -> Located | None:
        """Find a live event; None when Redis holds nothing for it (processed or unknown)."""
        for _ in range(5):  # the event may move while we look; look again
            found_status = await self._status(event_id)
            if found_status is None:
                return None
            part, status = found_status
            k = part.keys
            kind, _, ref = status.partition(":")
            if kind == "q":
                found = await self._r.xrange(k.stream, ref, ref)
                if not found:
                    continue
                entry = StreamEntry.from_fields(ref, found[0][1], part.index)
                try:
                    owned = await self._r.xpending_range(k.stream, GROUP, ref, ref, 1)
                except ResponseError as exc:  # queued before any worker made the group
                    if "NOGROUP" not in str(exc):
                        raise
                    owned = []
                first = entry.first_failure_ms
                if owned:
                    return Located("processing", entry.envelope, entry.attempts + 1, first_failure_ms=first)
                return Located("queued", entry.envelope, entry.attempts, first_failure_ms=first)
            if kind == "r":
                async with self._r.pipeline(transaction=True) as pipe:
                    pipe.hget(k.retry_body, event_id)
                    pipe.zscore(k.retry, event_id)
                    pipe.hget(k.retry_error, event_id)
                    body, due, error = await pipe.execute()
                if body is None:
                    continue
                attempts, first = retry_record(ref)
                return Located(
                    "retrying",
                    body,
                    attempts,
                    next_attempt_ms=int(due or 0),
                    first_failure_ms=first,
                    last_error=error,
                )
            if kind == "d":
                dead = await self._dead_in(part, ref)
                if dead is None:
                    continue
                return Located("dead", dead.envelope, dead.attempts, dead=dead)
            if kind == "k":
                body = await self._r.hget(k.parked, event_id)
                if body is None:
                    continue
                parked_ms, _, envelope = body.partition(":")
                return Located("queued", envelope, 0, parked_ms=int(parked_ms or 0))
        return None

    # ---- DLQ -----------------------------------------------------------------------

    async def _dead_in(self, part: Partition, dlq_entry: str) -> DeadEntry | None:
        found = await self._r.xrange(part.keys.dlq, dlq_entry, dlq_entry)
        return DeadEntry.from_fields(found[0][0], found[0][1], part.index) if found else None

    async def dead_entry(self, position: str) -> DeadEntry | None:
        """The DLQ entry at ``position`` (DeadEntry.position), if there is one."""
        key = position_key(position)
        if key is None or key[2] >= len(self.partitions):
            return None
        return await self._dead_in(self.partitions[key[2]], f"{key[0]}-{key[1]}")

    async def dead_entry_of(self, event_id: str) -> DeadEntry | None:
        found = await self._status(event_id)
        if found is None or not found[1].startswith("d:"):
            return None
        return await self._dead_in(found[0], found[1][2:])

    async def list_dead(
        self, before: str | None, count: int, type_: str | None = None
    ) -> tuple[list[DeadEntry], str | None]:
        """Newest first (by DLQ position, see DeadEntry.position). ``before`` is an
        exclusive position (the cursor); the cursor returned is None when no more are left."""
        key = position_key(before) if before else None
        pages = []
        for part in self.partitions:
            if key is None:
                high = "+"
            else:  # positions order by (ms, seq, partition)
                high = f"{key[0]}-{key[1]}" if part.index < key[2] else f"({key[0]}-{key[1]}"
            pages.append(await self._dead_newest(part, high, count, type_))
        out = list(itertools.islice(heapq.merge(*pages, key=_order, reverse=True), count))
        return out, out[-1].position if len(out) == count else None

    async def _dead_newest(
        self, part: Partition, high: str, count: int, type_: str | None
    ) -> list[DeadEntry]:
        out: list[DeadEntry] = []
        while len(out) < count:
            chunk = await self._r.xrevrange(part.keys.dlq, max=high, min="-", count=max(count, 100))
            if not chunk:
                break
            for entry, fields in chunk:
                high = f"({entry}"
                if type_ is None or fields.get("t") == type_:
                    out.append(DeadEntry.from_fields(entry, fields, part.index))
                    if len(out) == count:
                        break
        return out

    async def scan_dead(self, after: str, count: int) -> list[DeadEntry]:
        """Oldest first (by DLQ position), strictly after the position ``after`` ("-" to start)."""
        key = None if after == "-" else position_key(after)
        if after != "-" and key is None:
            raise ValueError(f"not a DLQ position: {after!r}")
        pages = []
        for part in self.partitions:
            if key is None:
                low = "-"
            else:
                low = f"({key[0]}-{key[1]}" if part.index <= key[2] else f"{key[0]}-{key[1]}"
            chunk = await self._r.xrange(part.keys.dlq, min=low, max="+", count=count)
            pages.append([DeadEntry.from_fields(e, f, part.index) for e, f in chunk])
        return list(itertools.islice(heapq.merge(*pages, key=_order), count))

    async def dead_ends(self) -> list[str | None]:
        """Each partition's newest DLQ entry id, in partition order (None: its DLQ is empty)."""
        out: list[str | None] = []
        for [newest] in await self._fan_out(lambda pipe, p: pipe.xrevrange(p.keys.dlq, count=1)):
            if isinstance(newest, Exception):
                raise newest
            out.append(str(newest[0][0]) if newest else None)
        return out

    async def count_dead(
        self, spans: dict[int, tuple[str, str]], n: int, match: DeadFilter, firsts: int = 0
    ) -> dict[int, DeadTally]:
        """Count the DLQ entries that ``match``, at most ``n`` examined per partition: for
        each partition index in ``spans``, from its start to its end (XRANGE bounds: an
        entry id, or "(" and an id to start after it), in one round trip. Each tally
        also names its first ``firsts`` matches (DLQ position, event id)."""
        parts = [self.partitions[i] for i in sorted(spans)]
        args: list[str | int] = [
            match.type or "",
            match.text or "",
            "" if match.since_ms is None else match.since_ms,
            "" if match.until_ms is None else match.until_ms,
            firsts,
        ]

        async def queue(pipe: Any, part: Partition) -> None:
            start, end = spans[part.index]
            await part.scripts.count_dead(pipe, start, end, n, args)

        out = {}
        for part, [reply] in zip(parts, await self._fan_out(queue, parts=parts), strict=True):
            if isinstance(reply, Exception):
                raise reply
            matched, examined, last, ids = reply
            pairs = zip(ids[::2], ids[1::2], strict=True)
            named = [(dead_position(str(e), part.index), str(i)) for e, i in pairs]
            out[part.index] = DeadTally(int(matched), int(examined), str(last) or None, named)
        return out

    # ---- server checks -------------------------------------------------------------

    async def safety_warnings(self) -> list[str]:
        """Reasons this Redis could lose accepted events (empty when it looks safe); on a
        cluster, of each primary, named."""
        try:
            nodes = await self._configs("maxmemory-policy", "appendonly", "save")
        except ResponseError:
            return [
                "cannot read the server's config (CONFIG is disabled): check by hand that "
                "maxmemory-policy is noeviction and appendonly is yes"
            ]
        warnings = []
        for node, config in nodes.items():
            where = f"{node}: " if node else ""
            policy, aof, save = config.get("maxmemory-policy"), config.get("appendonly"), config.get("save")
            if policy != "noeviction":
                warnings.append(
                    f"{where}maxmemory-policy is {policy!r}: Redis may evict queued events under "
                    "memory pressure; set it to 'noeviction'"
                )
            if aof != "yes":
                lost = "everything" if not save else "events since the last snapshot"
                warnings.append(
                    f"{where}appendonly is {aof!r}: a Redis restart loses {lost}; set appendonly yes"
                )
        return warnings

    async def _configs(self, *names: str) -> dict[str, dict[str, str]]:
        """CONFIG GET of each name: {"": config} on one server, {node: config} per primary
        of a cluster."""
        if not self._cluster:
            config: dict[str, str] = {}
            for name in names:
                config.update(await self._r.config_get(name))
            return {"": config}
        out: dict[str, dict[str, str]] = {}
        for name in names:
            reply = await self._r.config_get(name, target_nodes=RedisCluster.PRIMARIES)
            by_node = {"": reply} if name in reply else reply
            for node, values in by_node.items():
                out.setdefault(node or "primary", {}).update(values)
        return out


def _queue_sizes(pipe: Any, part: Partition) -> None:
    pipe.xlen(part.keys.stream)
    pipe.zcard(part.keys.retry)
    pipe.hlen(part.keys.parked)
    pipe.hlen(part.keys.outbox)  # follow-ups on their way to their partitions


def _queue_sizes_and_dead(pipe: Any, part: Partition) -> None:
    _queue_sizes(pipe, part)
    pipe.xlen(part.keys.dlq)


def _fullness(info: dict[str, Any]) -> float:
    limit = int(info.get("maxmemory", 0))
    return int(info.get("used_memory", 0)) / limit if limit else 0.0


def _order(dead: DeadEntry) -> tuple[int, int, int]:
    ms, _, seq = dead.dlq_entry.partition("-")
    return int(ms), int(seq), dead.partition


def _sum_maps(maps: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        if isinstance(m, Exception):
            raise m
        for k, v in m.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def merge_snapshots(
    snaps: Sequence[tuple[dict[str, int], dict[str, int], dict[str, int]]],
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """The deployment's snapshot from its partitions': everything summed, except live
    workers (each beats in every partition: the most any partition saw) and the oldest
    wait (the longest of any partition's)."""
    if len(snaps) == 1:
        return snaps[0]
    counters = _sum_maps(s[0] for s in snaps)
    gauges = _sum_maps(s[1] for s in snaps)
    gauges["workers"] = max(s[1].get("workers", 0) for s in snaps)
    gauges["oldest_parked_ms"] = max(s[1].get("oldest_parked_ms", 0) for s in snaps)
    return counters, gauges, _sum_maps(s[2] for s in snaps)
