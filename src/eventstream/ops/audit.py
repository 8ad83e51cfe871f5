"""The audit: check the conservation law and find anything stranded, from the counters
and the real contents of Redis and the store.

Every accepted event is in exactly one place, so at any instant

    received == processed + dlq + deleted + queued + pending + scheduled

where ``queued + pending`` is the stream's length, ``scheduled`` the retry set's size
and ``dlq`` the dead-letter stream's length (read together in one MULTI, so the
equation holds exactly even while workers run). Beyond the sums the audit walks the
contents in bounded chunks (XRANGE / ZRANGE / HSCAN, ``chunk`` items at a time) and
lists, with up to ``examples`` ids each:

- pending entries of consumers that are gone (no heartbeat for ``stale_after_ms``)
  and untouched as long: nobody will finish them unless a worker reclaims them;
- entries a live worker has held longer than their handlers' timeouts allow (the
  worker reports them when it renews its leases): a stuck worker, or sync handlers
  waiting for a free thread;
- retries due more than ``overdue_after_ms`` ago: no worker is promoting;
- live events (stream or retry set) already recorded in the store, except entries
  a live worker is settling right now;
- status fields that point nowhere, and live or dead entries whose status field is
  missing or points elsewhere (which also catches one event in two places);
- events both in the store and in the DLQ;
- the store's row count against the ``processed`` counter.

Suspects found by the chunked walk are checked again in one MULTI each batch, so an
event that merely moved while the walk ran is not reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translated
from eventstream.broker import Broker
from eventstream.broker.keys import GROUP, Keys
from eventstream.store import SqlStore

CHUNK = 500
EXAMPLES = 5
OVERDUE_AFTER_MS = 60_000


@dataclass(frozen=True, slots=True)
class Problem:
    """One kind of inconsistency: how many were found and a few example ids."""

    code: str
    count: int
    detail: str
    examples: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "count": self.count,
            "detail": self.detail,
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What the audit saw. ``ok`` when the law holds and nothing is stranded."""

    at_ms: int
    received: int
    processed: int
    dlq: int
    deleted: int
    queued: int
    pending: int
    scheduled: int
    store_processed: int
    live_in_store: int  # live entries whose rows are written (settling now, or stranded)
    problems: tuple[Problem, ...] = field(default=())

    @property
    def accounted(self) -> int:
        return self.processed + self.dlq + self.deleted + self.queued + self.pending + self.scheduled

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": self.at_ms,
            "received": self.received,
            "accounted": self.accounted,
            "processed": self.processed,
            "dlq": self.dlq,
            "deleted": self.deleted,
            "queued": self.queued,
            "pending": self.pending,
            "scheduled": self.scheduled,
            "storeProcessed": self.store_processed,
            "liveInStore": self.live_in_store,
            "problems": [p.to_json() for p in self.problems],
        }


class _Found:
    """Ids collected for one problem: an exact count, a few examples."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.examples: list[str] = []

    def add(self, ids: Iterable[str]) -> None:
        for i in ids:
            self.count += 1
            if len(self.examples) < self.limit:
                self.examples.append(i)


@translated(REDIS)  # its reads of Redis are its own (not the Broker's)
async def audit(
    broker: Broker,
    store: SqlStore,
    now_ms: int,
    *,
    visibility_timeout_ms: int,
    stale_after_ms: int | None = None,
    overdue_after_ms: int = OVERDUE_AFTER_MS,
    examples: int = EXAMPLES,
    chunk: int = CHUNK,
) -> AuditReport:
    """Audit one deployment (the broker's key prefix) against its store."""
    a = _Audit(
        broker, store, now_ms, visibility_timeout_ms, stale_after_ms, overdue_after_ms, examples, chunk
    )
    return await a.run()


class _Audit:
    def __init__(
        self,
        broker: Broker,
        store: SqlStore,
        now_ms: int,
        vt_ms: int,
        stale_after_ms: int | None,
        overdue_after_ms: int,
        examples: int,
        chunk: int,
    ) -> None:
        self.broker = broker
        self.r: Any = broker.redis  # decodes to str; see Broker._r
        self.k = broker.keys
        self.store = store
        self.now = now_ms
        self.vt_ms = vt_ms
        self.stale_ms = stale_after_ms if stale_after_ms is not None else 3 * vt_ms
        self.overdue_ms = overdue_after_ms
        self.examples = examples
        self.chunk = max(1, chunk)
        self.found: dict[str, _Found] = {}
        self.details: dict[str, str] = {}
        self.live_in_store = 0

    def _problem(self, code: str, detail: str) -> _Found:
        if code not in self.found:
            self.found[code] = _Found(self.examples)
            self.details[code] = detail
        return self.found[code]

    async def run(self) -> AuditReport:
        counters, length, scheduled, dlq, pending = await self._snapshot()
        store_count = await self.store.count()
        settling = await self._settling_entries()
        await self._stranded_pending()
        await self._overdue_in_flight()
        await self._overdue_retries()
        await self._scan_stream(settling)
        await self._scan_retries()
        await self._scan_dlq()
        await self._scan_status()

        received = counters.get("received", 0)
        processed = counters.get("processed", 0)
        deleted = counters.get("deleted", 0)
        report = AuditReport(
            at_ms=self.now,
            received=received,
            processed=processed,
            dlq=dlq,
            deleted=deleted,
            queued=max(length - pending, 0),
            pending=pending,
            scheduled=scheduled,
            store_processed=store_count,
            live_in_store=self.live_in_store,
        )
        problems: list[Problem] = []
        if report.accounted != received:
            diff = report.accounted - received
            problems.append(
                Problem(
                    "conservation",
                    abs(diff),
                    f"received {received} != processed {processed} + dlq {dlq} + deleted {deleted} "
                    f"+ queued {report.queued} + pending {pending} + scheduled {scheduled} "
                    f"= {report.accounted} ({diff:+d}): events were "
                    + ("counted twice or appeared without being received" if diff > 0 else "lost"),
                )
            )
        # Rows are written before the completion is counted, so the store may lead the
        # counter by exactly the live entries whose rows exist, and by nothing else.
        expected = processed + self.live_in_store
        if store_count != expected:
            diff = store_count - expected
            problems.append(
                Problem(
                    "store_vs_processed",
                    abs(diff),
                    f"the store holds {store_count} processed events but the processed counter is "
                    f"{processed}"
                    + (f" (+{self.live_in_store} live with rows)" if self.live_in_store else "")
                    + f" ({diff:+d}): "
                    + ("rows without a recorded completion" if diff > 0 else "completions without a row"),
                )
            )
        for code, f in self.found.items():
            if f.count:
                problems.append(Problem(code, f.count, self.details[code], tuple(f.examples)))
        return replace(report, problems=tuple(problems))

    # ---- the sums ------------------------------------------------------------------

    async def _snapshot(self) -> tuple[dict[str, int], int, int, int, int]:
        """Counters and sizes in one MULTI: exact at one instant."""
        k = self.k
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(k.counters)
            pipe.xlen(k.stream)
            pipe.zcard(k.retry)
            pipe.xlen(k.dlq)
            pipe.xpending(k.stream, GROUP)
            raw, length, scheduled, dlq, pending = await pipe.execute(raise_on_error=False)
        for value in (raw, length, scheduled, dlq):
            if isinstance(value, Exception):
                raise value
        if isinstance(pending, ResponseError):  # no stream or no group yet
            if length:
                raise pending
            count = 0
        elif isinstance(pending, Exception):
            raise pending
        else:
            count = int(pending["pending"])
        return {f: int(v) for f, v in raw.items()}, int(length), int(scheduled), int(dlq), count

    # ---- stranded work -------------------------------------------------------------

    async def _pending_entries(self) -> list[dict[str, Any]]:
        """Every pending entry (entry, owner, idle ms), read in chunks."""
        out: list[dict[str, Any]] = []
        low = "-"
        while True:
            try:
                part = await self.r.xpending_range(self.k.stream, GROUP, min=low, max="+", count=self.chunk)
            except ResponseError:
                return out
            out += part
            if len(part) < self.chunk:
                return out
            low = f"({part[-1]['message_id']}"

    async def _settling_entries(self) -> set[str]:
        """Entries a live worker holds under a valid lease: their rows may be written already."""
        self._pending = await self._pending_entries()
        return {p["message_id"] for p in self._pending if int(p["time_since_delivered"]) < self.vt_ms}

    async def _stranded_pending(self) -> None:
        if not self._pending:
            return
        beats = {m: int(float(s)) for m, s in await self.r.zrange(self.k.workers, 0, -1, withscores=True)}
        cutoff = self.now - self.stale_ms
        gone = self._problem(
            "stranded_pending",
            f"in flight for a consumer with no heartbeat for {self.stale_ms / 1000:g}s and untouched "
            "as long: no live worker is reclaiming them (start a worker)",
        )
        for p in self._pending:
            owner = p["consumer"]
            if beats.get(owner, 0) < cutoff and int(p["time_since_delivered"]) >= self.stale_ms:
                gone.add([f"{p['message_id']} ({owner})"])

    async def _overdue_in_flight(self) -> None:
        reports = await self.broker.overdue_reports()
        if not reports:
            return
        beats = {m: int(float(s)) for m, s in await self.r.zrange(self.k.workers, 0, -1, withscores=True)}
        f = self._problem(
            "overdue_in_flight",
            "in flight in a live worker longer than their handlers' timeouts allow: a handler or the "
            "worker is stuck, or sync handlers wait for a thread (EVENTSTREAM_SYNC_THREADS)",
        )
        for consumer, raw in sorted(reports.items()):
            if beats.get(consumer, 0) < self.now - self.stale_ms:
                continue  # a gone worker: its entries are stranded_pending if anything
            try:
                report = msgspec.json.decode(raw)
                count, event_id = int(report["count"]), str(report["eventId"])
                age_s, allowed_s = report["ageMs"] / 1000, report["allowedMs"] / 1000
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                continue
            f.count += count - 1
            f.add([f"{event_id} ({consumer}: {age_s:.0f}s, allowed {allowed_s:.0f}s)"])

    async def _overdue_retries(self) -> None:
        cutoff = self.now - self.overdue_ms
        count = int(await self.r.zcount(self.k.retry, "-inf", cutoff))
        if count:
            ids = await self.r.zrangebyscore(self.k.retry, "-inf", cutoff, start=0, num=self.examples)
            f = self._problem(
                "overdue_retries",
                f"retries due more than {self.overdue_ms / 1000:g}s ago and still waiting: "
                "no worker is promoting them (start a worker)",
            )
            f.count += count
            f.examples += ids[: self.examples]

    # ---- contents ------------------------------------------------------------------

    async def _in_store(self, ids: list[str]) -> set[str]:
        return await self.store.existing(ids) if ids else set()

    async def _scan_stream(self, settling: set[str]) -> None:
        k = self.k
        low = "-"
        while True:
            part = await self.r.xrange(k.stream, min=low, max="+", count=self.chunk)
            if not part:
                return
            low = f"({part[-1][0]}"
            entries = [(e, f.get("id", "")) for e, f in part]
            await self._check_stream_status(entries)
            done = await self._in_store([i for _, i in entries])
            if done:
                hits = [(e, i) for e, i in entries if i in done]
                self.live_in_store += len(hits)
                stale = [(e, i) for e, i in hits if e not in settling]
                # confirm: still in the stream, still not held under a valid lease
                confirmed = await self._still_in_stream(stale)
                self._problem(
                    "completed_but_queued",
                    "stream entries whose event is already recorded in the store and that no live "
                    "worker is settling",
                ).add(f"{i} ({e})" for e, i in confirmed)
            if len(part) < self.chunk:
                return

    async def _still_in_stream(self, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if not entries:
            return []
        async with self.r.pipeline(transaction=True) as pipe:
            for e, _ in entries:
                pipe.xrange(self.k.stream, e, e)
                pipe.xpending_range(self.k.stream, GROUP, min=e, max=e, count=1)
            replies = await pipe.execute(raise_on_error=False)
        out = []
        for n, (e, i) in enumerate(entries):
            found, pend = replies[2 * n], replies[2 * n + 1]
            if isinstance(found, list) and found:
                held = isinstance(pend, list) and pend and int(pend[0]["time_since_delivered"]) < self.vt_ms
                if not held:
                    out.append((e, i))
        return out

    async def _check_stream_status(self, entries: list[tuple[str, str]]) -> None:
        statuses = await self.r.hmget(self.k.status, [i for _, i in entries])
        suspects = [(e, i) for (e, i), s in zip(entries, statuses, strict=True) if s != f"q:{e}"]
        await self._recheck_status(self.k.stream, "q", "", suspects)

    async def _recheck_status(
        self, stream: str, kind: str, label: str, suspects: list[tuple[str, str]]
    ) -> None:
        """Read each suspect entry and its status again in one atomic step; report those
        still present whose status does not point at them (they did not merely move)."""
        if not suspects:
            return
        async with self.r.pipeline(transaction=True) as pipe:
            for e, i in suspects:
                pipe.xrange(stream, e, e)
                pipe.hget(self.k.status, i)
            replies = await pipe.execute()
        bad = []
        for n, (e, i) in enumerate(suspects):
            found, status = replies[2 * n], replies[2 * n + 1]
            if found and status != f"{kind}:{e}":
                bad.append(f"{i} ({label}{e}: status {status or 'missing'})")
        self._problem(
            "live_without_status",
            "live entries (stream, retry set or DLQ) whose status field is missing or points "
            "elsewhere: the event is in two places, or its status was lost",
        ).add(bad)

    async def _scan_retries(self) -> None:
        k = self.k
        start = 0
        while True:
            ids: list[str] = await self.r.zrange(k.retry, start, start + self.chunk - 1)
            if not ids:
                return
            start += len(ids)
            async with self.r.pipeline(transaction=False) as pipe:
                pipe.hmget(k.status, ids)
                pipe.hmget(k.retry_body, ids)
                statuses, bodies = await pipe.execute()
            suspects = [
                i
                for i, s, b in zip(ids, statuses, bodies, strict=True)
                if not (s or "").startswith("r:") or b is None
            ]
            if suspects:
                async with self.r.pipeline(transaction=True) as pipe:
                    for i in suspects:
                        pipe.zscore(k.retry, i)
                        pipe.hget(k.status, i)
                        pipe.hexists(k.retry_body, i)
                    replies = await pipe.execute()
                bad = []
                for n, i in enumerate(suspects):
                    score, status, has_body = replies[3 * n : 3 * n + 3]
                    if score is not None and (not (status or "").startswith("r:") or not has_body):
                        what = "no body" if not has_body else f"status {status or 'missing'}"
                        bad.append(f"{i} (retry: {what})")
                self._problem(
                    "live_without_status",
                    "live entries (stream, retry set or DLQ) whose status field is missing or points "
                    "elsewhere: the event is in two places, or its status was lost",
                ).add(bad)
            done = await self._in_store(ids)
            if done:
                # confirm each is still waiting for a retry
                async with self.r.pipeline(transaction=True) as pipe:
                    for i in sorted(done):
                        pipe.zscore(k.retry, i)
                    scores = await pipe.execute()
                still = [i for i, s in zip(sorted(done), scores, strict=True) if s is not None]
                self.live_in_store += len(still)
                self._problem(
                    "completed_but_scheduled",
                    "retries whose event is already recorded in the store (a worker will acknowledge "
                    "them without running when they come due)",
                ).add(still)
            if len(ids) < self.chunk:
                return

    async def _scan_dlq(self) -> None:
        k = self.k
        low = "-"
        while True:
            part = await self.r.xrange(k.dlq, min=low, max="+", count=self.chunk)
            if not part:
                return
            low = f"({part[-1][0]}"
            entries = [(e, f.get("id", "")) for e, f in part]
            statuses = await self.r.hmget(k.status, [i for _, i in entries])
            suspects = [(e, i) for (e, i), s in zip(entries, statuses, strict=True) if s != f"d:{e}"]
            await self._recheck_status(k.dlq, "d", "dlq ", suspects)
            both = await self._in_store([i for _, i in entries])
            self._problem(
                "processed_and_dead",
                "events recorded in the store as processed and also in the DLQ",
            ).add(i for _, i in entries if i in both)
            if len(part) < self.chunk:
                return

    async def _scan_status(self) -> None:
        k = self.k
        cursor = 0
        while True:
            cursor, part = await self.r.hscan(k.status, cursor, count=self.chunk)
            items = list(part.items())
            if items:
                await self._check_status_targets(items)
            if cursor == 0:
                return

    async def _check_status_targets(self, items: list[tuple[str, str]]) -> None:
        """One MULTI per chunk reads each field again with its target: a field that still
        holds the value HSCAN saw and whose target is missing is wrong at that instant."""
        k = self.k
        async with self.r.pipeline(transaction=True) as pipe:
            for event_id, status in items:
                pipe.hget(k.status, event_id)
                _queue_target(pipe, k, event_id, status)
            replies = iter(await pipe.execute(raise_on_error=False))
        bad: list[str] = []
        for event_id, status in items:
            now_status = next(replies)
            target = next(replies)
            extra = next(replies) if status.startswith("r:") else None
            if now_status == status and not _target_ok(event_id, status, target, extra):
                bad.append(f"{event_id} ({status})")
        self._problem(
            "status_points_nowhere",
            "status fields whose stream entry, retry or DLQ entry does not exist (or holds another event)",
        ).add(bad)


def _queue_target(pipe: Any, k: Keys, event_id: str, status: str) -> None:
    """Queue the read(s) of what ``status`` points to: one command, two for a retry."""
    kind, _, ref = status.partition(":")
    if kind == "r":
        pipe.zscore(k.retry, event_id)
        pipe.hexists(k.retry_body, event_id)
    elif kind in ("q", "d") and _is_entry_id(ref):
        pipe.xrange(k.stream if kind == "q" else k.dlq, ref, ref)
    else:
        pipe.echo("")


def _is_entry_id(ref: str) -> bool:
    ms, _, seq = ref.partition("-")
    return ms.isdigit() and seq.isdigit()


def _target_ok(event_id: str, status: str, target: Any, extra: Any) -> bool:
    kind = status[:2]
    if kind in ("q:", "d:"):
        return isinstance(target, list) and bool(target) and target[0][1].get("id") == event_id
    if kind == "r:":
        return target is not None and not isinstance(target, Exception) and bool(extra)
    return False
