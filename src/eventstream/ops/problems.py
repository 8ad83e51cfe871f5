"""What the audit's walk finds beyond the sums: the contents of Redis read in bounded
chunks (``chunk`` items at a time) and checked against each other and the store. Each
kind of problem is listed with an exact count and up to ``examples`` ids:

- pending entries of consumers that are gone (no heartbeat for ``stale_ms``) and
  untouched as long: nobody will finish them unless a worker reclaims them;
- entries a live worker has held longer than their handlers' timeouts allow (the
  worker reports them when it renews its leases): a stuck worker, or sync handlers
  waiting for a free thread;
- retries due more than ``overdue_ms`` ago: no worker is promoting;
- live events (stream or retry set) already recorded in the store, except entries
  a live worker is settling right now;
- status fields that point nowhere, and live or dead entries whose status field is
  missing or points elsewhere (which also catches one event in two places);
- events both in the store and in the DLQ;
- parked events (waiting behind their ordering key) that nothing will release: their
  key has no event in progress, or their key's line is gone; keys whose place in the
  waiting set (which the oldest-wait gauge reads) disagrees with their line.

Suspects found by the chunked walk are read again in one MULTI each batch (the
broker's ``recheck_*`` reads), so an event that merely moved while the walk ran is
not reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from eventstream.broker import Broker
from eventstream.broker.reads import PendingEntry, StateReads
from eventstream.store import SqlStore

_PARKED_STATUS = re.compile(r"k:([0-9a-f]{32})")


def _parked_key(status: str | None) -> str | None:
    """The key digest a parked event's status names (None: not a parked status)."""
    match = _PARKED_STATUS.fullmatch(status or "")
    return match.group(1) if match else None


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


class Walk:
    """One walk over one partition's contents (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        reads: StateReads,
        store: SqlStore,
        now_ms: int,
        *,
        vt_ms: int,
        stale_ms: int,
        overdue_ms: int,
        examples: int,
        chunk: int,
    ) -> None:
        self.broker = broker
        self.reads = reads
        self.store = store
        self.now = now_ms
        self.vt_ms = vt_ms
        self.stale_ms = stale_ms
        self.overdue_ms = overdue_ms
        self.examples = examples
        self.chunk = max(1, chunk)
        self.found: dict[str, _Found] = {}
        self.details: dict[str, str] = {}
        self.live_in_store = 0  # live entries whose rows are written (settling now, or stranded)
        self._pending: list[PendingEntry] = []

    async def run(self, reports: bool = True) -> list[Problem]:
        """Every kind of problem found, in the order found (kinds with none left out).
        ``reports``: check the workers' overdue reports too (they are the deployment's:
        one partition's walk checks them)."""
        settling = await self._settling_entries()
        await self._stranded_pending()
        if reports:
            await self._overdue_in_flight()
        await self._overdue_retries()
        await self._scan_stream(settling)
        await self._scan_retries()
        await self._scan_dlq()
        await self._scan_status()
        await self._scan_parked()
        return [
            Problem(code, f.count, self.details[code], tuple(f.examples))
            for code, f in self.found.items()
            if f.count
        ]

    def _problem(self, code: str, detail: str) -> _Found:
        if code not in self.found:
            self.found[code] = _Found(self.examples)
            self.details[code] = detail
        return self.found[code]

    # ---- stranded work -------------------------------------------------------------

    async def _settling_entries(self) -> set[str]:
        """Entries a live worker holds under a valid lease: their rows may be written already."""
        self._pending = await self.reads.pending(self.chunk)
        return {p.entry for p in self._pending if p.idle_ms < self.vt_ms}

    async def _stranded_pending(self) -> None:
        if not self._pending:
            return
        beats = await self.reads.heartbeats()
        cutoff = self.now - self.stale_ms
        gone = self._problem(
            "stranded_pending",
            f"in flight for a consumer with no heartbeat for {self.stale_ms / 1000:g}s and untouched "
            "as long: no live worker is reclaiming them (start a worker)",
        )
        for p in self._pending:
            if beats.get(p.consumer, 0) < cutoff and p.idle_ms >= self.stale_ms:
                gone.add([f"{p.entry} ({p.consumer})"])

    async def _overdue_in_flight(self) -> None:
        reports = await self.broker.overdue_reports()
        if not reports:
            return
        beats = await self.reads.heartbeats()
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
        count, ids = await self.reads.retries_due(self.now - self.overdue_ms, self.examples)
        if count:
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
        after: str | None = None
        while True:
            entries = await self.reads.stream_page(after, self.chunk)
            if not entries:
                return
            after = entries[-1][0]
            statuses = await self.reads.statuses([i for _, i in entries])
            suspects = [(e, i) for (e, i), s in zip(entries, statuses, strict=True) if s != f"q:{e}"]
            await self._recheck_status("stream", "q", "", suspects)
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
            if len(entries) < self.chunk:
                return

    async def _still_in_stream(self, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        now = await self.reads.recheck_in_flight([e for e, _ in entries])
        return [
            (e, i)
            for (e, i), (present, idle_ms) in zip(entries, now, strict=True)
            if present and not (idle_ms is not None and idle_ms < self.vt_ms)
        ]

    async def _recheck_status(
        self, where: Literal["stream", "dlq"], kind: str, label: str, suspects: list[tuple[str, str]]
    ) -> None:
        """Read each suspect entry and its status again in one atomic step; report those
        still present whose status does not point at them (they did not merely move)."""
        if not suspects:
            return
        now = await self.reads.recheck_entries(where, suspects)
        bad = [
            f"{i} ({label}{e}: status {status or 'missing'})"
            for (e, i), (found, status) in zip(suspects, now, strict=True)
            if found and status != f"{kind}:{e}"
        ]
        self._live_without_status().add(bad)

    def _live_without_status(self) -> _Found:
        return self._problem(
            "live_without_status",
            "live entries (stream, retry set, parked or DLQ) whose status field is missing or "
            "points elsewhere: the event is in two places, or its status was lost",
        )

    async def _scan_retries(self) -> None:
        start = 0
        while True:
            ids = await self.reads.retry_page(start, self.chunk)
            if not ids:
                return
            start += len(ids)
            records = await self.reads.retry_records(ids)
            suspects = [
                i
                for i, (status, has_body) in zip(ids, records, strict=True)
                if not (status or "").startswith("r:") or not has_body
            ]
            if suspects:
                now = await self.reads.recheck_retries(suspects)
                bad = []
                for i, (scheduled, status, has_body) in zip(suspects, now, strict=True):
                    if scheduled and (not (status or "").startswith("r:") or not has_body):
                        what = "no body" if not has_body else f"status {status or 'missing'}"
                        bad.append(f"{i} (retry: {what})")
                self._live_without_status().add(bad)
            done = await self._in_store(ids)
            if done:
                # confirm each is still waiting for a retry
                ordered = sorted(done)
                scheduled_now = await self.reads.recheck_scheduled(ordered)
                still = [i for i, s in zip(ordered, scheduled_now, strict=True) if s]
                self.live_in_store += len(still)
                self._problem(
                    "completed_but_scheduled",
                    "retries whose event is already recorded in the store (a worker will acknowledge "
                    "them without running when they come due)",
                ).add(still)
            if len(ids) < self.chunk:
                return

    async def _scan_dlq(self) -> None:
        after: str | None = None
        while True:
            entries = await self.reads.dlq_page(after, self.chunk)
            if not entries:
                return
            after = entries[-1][0]
            statuses = await self.reads.statuses([i for _, i in entries])
            suspects = [(e, i) for (e, i), s in zip(entries, statuses, strict=True) if s != f"d:{e}"]
            await self._recheck_status("dlq", "d", "dlq ", suspects)
            both = await self._in_store([i for _, i in entries])
            self._problem(
                "processed_and_dead",
                "events recorded in the store as processed and also in the DLQ",
            ).add(i for _, i in entries if i in both)
            if len(entries) < self.chunk:
                return

    async def _scan_status(self) -> None:
        cursor = 0
        while True:
            cursor, items = await self.reads.status_page(cursor, self.chunk)
            if items:
                await self._check_status_targets(items)
            if cursor == 0:
                return

    async def _check_status_targets(self, items: list[tuple[str, str]]) -> None:
        """One MULTI per chunk reads each field again with its target: a field that still
        holds the value HSCAN saw and whose target is missing is wrong at that instant."""
        targets = await self.reads.recheck_targets(items)
        bad = [
            f"{event_id} ({status})"
            for (event_id, status), target in zip(items, targets, strict=True)
            if target.status == status and not target.holds
        ]
        self._problem(
            "status_points_nowhere",
            "status fields whose stream entry, retry, parked body or DLQ entry does not exist (or "
            "holds another event)",
        ).add(bad)

    # ---- ordering ------------------------------------------------------------------

    async def _scan_parked(self) -> None:
        """The parked bodies, then each key they name or the waiting set names, once."""
        checked: set[str] = set()
        cursor = 0
        while True:
            cursor, ids = await self.reads.parked_page(cursor, self.chunk)
            if ids:
                digests = [_parked_key(s) for s in await self.reads.statuses(ids)]
                await self._check_parked(list(zip(ids, digests, strict=True)))
                await self._check_keys({d for d in digests if d is not None} - checked)
                checked.update(d for d in digests if d is not None)
            if cursor == 0:
                break
        start = 0
        while True:
            page = await self.reads.waiting_page(start, self.chunk)
            start += len(page)
            await self._check_keys(set(page) - checked)
            checked.update(page)
            if len(page) < self.chunk:
                return

    async def _check_parked(self, items: list[tuple[str, str | None]]) -> None:
        """Parked bodies whose status does not name a key, or whose key's line is gone
        (order.lua releases a key's events from its line: these would wait forever)."""
        named = sorted({d for _, d in items if d is not None})
        gone = {d for d, n in zip(named, await self.reads.line_lengths(named), strict=True) if not n}
        suspects = [(i, d) for i, d in items if d is None or d in gone]
        if not suspects:
            return
        without_status, without_line = [], []
        for (i, d), (parked, status, line) in zip(
            suspects, await self.reads.recheck_parked(suspects), strict=True
        ):
            if not parked:
                continue  # released or removed meanwhile
            if _parked_key(status) is None:
                without_status.append(f"{i} (parked: status {status or 'missing'})")
            elif status == f"k:{d}" and not line:
                without_line.append(f"{i} (key {d})")
        self._live_without_status().add(without_status)
        if without_line:
            self._problem(
                "parked_without_line",
                "parked events whose ordering key names no line ({p}:order has no places for "
                "it): nothing will release them",
            ).add(without_line)

    async def _check_keys(self, digests: set[str]) -> None:
        """Keys with parked events and none in progress (the step that finishes a key's
        event releases the next: nothing will), and keys whose place in the waiting set
        disagrees with their line (the oldest-wait gauge reads that set)."""
        ordered = sorted(digests)
        for n in range(0, len(ordered), self.chunk):
            chunk = ordered[n : n + self.chunk]
            for d, key in zip(chunk, await self.reads.recheck_keys(chunk), strict=True):
                if key.parked and not key.busy:
                    stuck = self._problem(
                        "parked_without_busy_key",
                        "events parked behind an ordering key that has no event in progress "
                        "({p}:order counts none for it): nothing will release them",
                    )
                    stuck.count += key.parked - 1
                    stuck.add([f"{key.first} (key {d}: {key.parked} parked)"])
                if bool(key.parked) != key.waiting:
                    self._problem(
                        "waiting_out_of_step",
                        "ordering keys with parked events missing from the waiting set, or named "
                        "there with none parked: the oldest-wait gauge is wrong for them",
                    ).add([f"{d} ({key.parked} parked, " + ("waiting)" if key.waiting else "not waiting)")])


def merged(found: list[list[Problem]], limit: int) -> list[Problem]:
    """The problems of several partitions' walks as one list: counts summed, examples
    (marked with their partition when there are several) up to ``limit``, in the order
    first found."""
    if len(found) == 1:
        return found[0]
    out: dict[str, Problem] = {}
    for index, problems in enumerate(found):
        for p in problems:
            marked = tuple(f"{e} [partition {index}]" for e in p.examples)
            had = out.get(p.code)
            if had is None:
                out[p.code] = Problem(p.code, p.count, p.detail, marked[:limit])
            else:
                examples = (*had.examples, *marked)[:limit]
                out[p.code] = Problem(p.code, had.count + p.count, had.detail, examples)
    return list(out.values())
