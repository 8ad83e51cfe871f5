"""The worker: reads batches, runs handlers concurrently, settles outcomes in groups.

Five tasks share one event loop:

- reader:      XREADGROUP up to the free capacity; each entry becomes a handler task
- settler:     takes every outcome that is ready and writes its store rows
- recorder:    records the stored outcomes in one Redis round trip (complete / retry /
               dead-letter), while the settler writes the next group's rows
- maintenance: promotes due retries, reclaims entries of silent workers, renews the
               leases of this worker's in-flight entries, beats the heart
- handler tasks, at most ``concurrency`` at a time

``run(burst=True)`` returns once nothing is queued, in flight or scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import msgspec
import structlog

from eventstream.app import EventStream
from eventstream.broker import Broker, Ref, StreamEntry, key_limits
from eventstream.errors import BackendError, BackendUnavailable
from eventstream.event import decode_envelope
from eventstream.logs import entry_fields
from eventstream.settings import Settings
from eventstream.store import SqlStore
from eventstream.tasks import cancel_and_wait
from eventstream.worker import follow_ups
from eventstream.worker.dispatch import Dispatcher, Done, Outcome
from eventstream.worker.follow_ups import unstage
from eventstream.worker.settle import record_outcomes, stage_follow_ups, write_rows

log = structlog.get_logger("eventstream.worker")

P = ParamSpec("P")
T = TypeVar("T")

READ_BLOCK_MS = 200
MAX_BACKOFF_S = 2.0
STOP_TASKS_S = 5.0
MAX_GROUP = 2_000  # outcomes per store transaction / Redis round trip


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        app: EventStream,
        settings: Settings,
        broker: Broker,
        store: SqlStore,
        consumer: str | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.broker = broker
        self.store = store
        self.consumer = consumer or consumer_name()
        self._key_limits = key_limits(app.key_limits)  # what settling tells order.lua
        self.dispatcher = Dispatcher(app, settings)
        self.dispatcher.on_abandon = self._abandoned_handler
        follow_ups.configure(settings)  # Event.emit checks follow-ups against these limits
        self._run: Callable[[StreamEntry], Awaitable[Outcome]] = self.dispatcher.run
        if settings.tracing:  # decided once: with tracing off, handler tries carry no tracing code
            from eventstream.worker.tracing import traced

            self._run = traced(self.dispatcher.run, settings)
            self.dispatcher.propagate_context()
        # Keyed by (partition, entry): entry ids are unique within a partition only.
        self._inflight: dict[Ref, StreamEntry] = {}
        self._started: dict[Ref, int] = {}  # entry -> when this worker took it (ms)
        self._overdue_report: str | None = None  # as last written to Redis
        self._settling: set[Ref] = set()  # entries whose outcomes are being recorded
        self._abandoned: list[Ref] = []  # entries whose handlers were cancelled at shutdown
        self._tasks: set[asyncio.Task[None]] = set()
        # Tasks of handlers that ignored their cancellation: their tries are recorded as
        # failed, and whatever they do later is ignored.
        self.stuck: set[asyncio.Task[Any]] = set()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._stored: asyncio.Queue[list[Outcome]] = asyncio.Queue()  # rows written, for Redis
        self._space = asyncio.Event()
        self._space.set()
        self._stop = asyncio.Event()
        self._fatal: BaseException | None = None
        self.settled = 0

    # ---- lifecycle -----------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop reading; in-flight work finishes within the shutdown grace period."""
        first = not self._stop.is_set()
        # The flag first: the line below may fail (stderr a closed pipe) and must not stop the stop.
        self._stop.set()
        self._space.set()  # wake the reader if it waits for a free slot: it must see the stop
        if first:
            log.info("worker stopping", consumer=self.consumer, in_flight=len(self._inflight))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self, burst: bool = False) -> None:
        await self._retrying(self.broker.ensure_group)
        await self.broker.heartbeat(self.consumer, _now_ms())
        log.info(
            "worker started",
            consumer=self.consumer,
            app=self.app.name,
            handlers=self.app.types,
            concurrency=self.settings.concurrency,
        )
        settler = asyncio.create_task(self._settle_loop(), name="settler")
        recorder = asyncio.create_task(self._record_loop(), name="recorder")
        maintenance = asyncio.create_task(self._maintenance_loop(), name="maintenance")
        try:
            await self._read_loop(burst)
            await self._end_reads()
            await self._drain_inflight()
        finally:
            maintenance.cancel()
            if not (settler.done() or recorder.done()):
                try:
                    await asyncio.wait_for(self._outcomes.join(), self.settings.shutdown_grace)
                except TimeoutError:
                    log.warning("could not record every outcome before stopping")
            if await cancel_and_wait([settler, recorder, maintenance], STOP_TASKS_S):
                log.warning("internal tasks did not stop in time", consumer=self.consumer)
            with contextlib.suppress(BackendUnavailable, BackendError):
                await self.broker.leave(self.consumer)
            self.dispatcher.shutdown()
            if self.stuck or self.dispatcher.stuck_threads:
                log.warning(
                    "handlers that ignored their timeout are still running; the process may "
                    "exit without waiting for them",
                    coroutines=len(self.stuck),
                    threads=self.dispatcher.stuck_threads,
                )
            log.info("worker stopped", consumer=self.consumer, settled=self.settled)
        if self._fatal is not None:
            raise self._fatal

    async def _drain_inflight(self) -> None:
        # The grace period in all: handlers may finish on their own until its last
        # stretch, which is left for the cancelled ones to stop in.
        grace = self.settings.shutdown_grace
        cancel_s = min(self.settings.handler_cancel_grace, grace / 2)
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=grace - cancel_s)
            if still:
                log.warning(
                    "grace period over: leaving unfinished events to be reclaimed",
                    count=len(still),
                )
                if await cancel_and_wait(still, cancel_s):
                    log.warning("handlers ignored cancellation; stopping without them")
                    # their entries too: in flight, not being recorded
                    self._abandoned += [e for e in self._inflight if e not in self._settling]
                await self._release(self._abandoned)

    async def _release(self, entries: list[Ref]) -> None:
        """Let live workers take these entries now instead of after the visibility timeout."""
        if not entries:
            return
        try:
            await self.broker.release(self.consumer, entries, int(self.settings.visibility_timeout * 1000))
        except (BackendUnavailable, BackendError) as exc:
            log.warning("could not release unfinished events; they wait for the visibility timeout",
                        error=str(exc))  # fmt: skip

    # ---- reading -------------------------------------------------------------------

    async def _read_loop(self, burst: bool) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            free = self.settings.concurrency - len(self._inflight)
            if free <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            try:
                entries = await self.broker.read_new(
                    self.consumer, min(free, self.settings.batch_size), READ_BLOCK_MS
                )
                backoff = 0.05
            except BackendUnavailable as exc:
                log.warning("redis unreachable, retrying", error=str(exc), in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if entries:
                await self._dispatch(entries, redelivered=False)
            elif burst and await self._idle():
                return

    async def _end_reads(self) -> None:
        """Reads still open when the reader stopped (one per partition on a Redis Cluster)
        may have delivered entries: let other workers take them now."""
        try:
            late = await self.broker.end_reads(self.consumer)
        except (BackendUnavailable, BackendError):
            return
        await self._release([e.ref for e in late])

    async def _idle(self) -> bool:
        if self._inflight or not self._outcomes.empty():
            return False
        return await self.broker.is_idle()

    async def _dispatch(self, entries: list[StreamEntry], redelivered: bool) -> None:
        """Start handler tasks; entries that may already be processed are checked first."""
        now = _now_ms()
        for e in entries:
            self._inflight[e.ref] = e
            self._started[e.ref] = now
        suspect = [e for e in entries if redelivered or e.attempts > 0]
        already: set[str] = set()
        staged: dict[str, str] = {}
        if suspect:
            already = await self._retrying(self.store.existing, [e.event_id for e in suspect])
        if already:
            refs = [(e.partition, e.event_id) for e in suspect if e.event_id in already]
            staged = await self._retrying(self.broker.staged_follow_ups, refs)
        for e in entries:
            if e.event_id in already:
                env = decode_envelope(e.envelope)
                log.info(
                    "redelivered but already processed: acknowledged without running",
                    event_id=e.event_id,
                    event_type=env.type,
                    attempt=e.attempts + 1,  # the try this delivery is: it already succeeded
                )
                blob = staged.get(e.event_id)
                follow_ups = unstage(blob) if blob is not None else ()
                self._outcomes.put_nowait(Done(e, env, e.attempts, 0.0, True, follow_ups))
                continue
            task = asyncio.create_task(self._handle(e))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry: StreamEntry) -> None:
        try:
            outcome = await self._run(entry)
        except asyncio.CancelledError:
            if not self._is_stuck():
                self._inflight.pop(entry.ref, None)
                self._started.pop(entry.ref, None)
                self._abandoned.append(entry.ref)
                self._space.set()
            raise
        except BaseException as exc:  # never leave an entry in flight with no outcome
            log.exception("handler try failed to run", **entry_fields(entry))
            outcome = self.dispatcher.crashed(entry, exc)
        if self._is_stuck():  # abandoned earlier: its outcome is recorded already
            return
        self._outcomes.put_nowait(outcome)

    def _is_stuck(self) -> bool:
        if not self.stuck:
            return False
        task = asyncio.current_task()
        if task in self.stuck:
            self.stuck.discard(task)
            return True
        return False

    def _abandoned_handler(self, task: asyncio.Task[Any], outcome: Outcome) -> None:
        """A handler ignored its cancellation: record its try as failed and go on without it."""
        self.stuck.add(task)
        self._tasks.discard(task)
        log.error(
            "handler ignored cancellation after its timeout: abandoned, its try recorded as failed",
            **entry_fields(outcome.delivery),
        )
        self._outcomes.put_nowait(outcome)

    # ---- settling ------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        """The store stage: take every outcome that is ready, stage its follow-ups and
        write its store rows, then hand the group to the Redis stage. The next group's
        rows are written while Redis records this one."""
        while True:
            group = [await self._outcomes.get()]
            while len(group) < MAX_GROUP and not self._outcomes.empty():
                group.append(self._outcomes.get_nowait())
            self._settling.update(o.delivery.ref for o in group)
            try:
                # Store first, Redis second: a crash in between makes Redis redeliver,
                # and the redelivery finds the row and is acknowledged without running
                # again, with the follow-ups staged before the row.
                await self._retrying(stage_follow_ups, self.broker, group)
                await self._retrying(write_rows, self.store, group)
            except Exception as exc:
                self._cannot_record(exc)
                self._settled(group)
            else:
                self._stored.put_nowait(group)

    async def _record_loop(self) -> None:
        """The Redis stage: record every stored group that is waiting in one round trip
        (complete / retry / dead-letter)."""
        while True:
            group = await self._stored.get()
            while len(group) < MAX_GROUP and not self._stored.empty():
                group += self._stored.get_nowait()
            try:
                await self._retrying(record_outcomes, self.broker, self.consumer, group, self._key_limits)
                self.settled += len(group)
                # only a follow-up with an ordering key can belong to another partition (emits.py)
                if self.broker.layout.count > 1 and any(
                    f.ordering_key for o in group if isinstance(o, Done) for f in o.follow_ups
                ):
                    await self._relay()
            except Exception as exc:
                self._cannot_record(exc)
            finally:
                self._settled(group)

    def _cannot_record(self, exc: Exception) -> None:
        # Not a transient outage: stop rather than run handlers whose outcomes cannot
        # be recorded. The entries stay pending and will be reclaimed.
        log.exception("cannot record outcomes; stopping", error=str(exc))
        self._fatal = exc
        self.request_stop()

    def _settled(self, group: list[Outcome]) -> None:
        for o in group:
            self._inflight.pop(o.delivery.ref, None)
            self._started.pop(o.delivery.ref, None)
            self._settling.discard(o.delivery.ref)
            self._outcomes.task_done()
        self._space.set()

    async def _retrying(self, func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call until it succeeds: Redis or the store being down must not lose outcomes."""
        backoff = 0.05
        while True:
            try:
                return await func(*args, **kwargs)
            except BackendUnavailable as exc:
                log.warning(
                    "backing service unavailable, retrying",
                    op=getattr(func, "__name__", "call"),
                    error=f"{type(exc).__name__}: {exc}",
                    in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    # ---- maintenance ---------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        s = self.settings
        vt_ms = int(s.visibility_timeout * 1000)
        renew_every = s.visibility_timeout / 3
        reclaim_every = min(1.0, s.visibility_timeout / 4)
        last_renew = last_reclaim = 0.0
        backoff = s.poll_interval
        while True:
            now = time.monotonic()
            try:
                await self._promote()
                if now - last_renew >= renew_every:
                    await self._renew()
                    last_renew = now
                if now - last_reclaim >= reclaim_every and not self._stop.is_set():
                    await self._reclaim(vt_ms)
                    if self.broker.layout.count > 1:
                        await self._relay()  # what a worker that died before relaying left
                    last_reclaim = now
                backoff = s.poll_interval
            except BackendUnavailable as exc:
                log.warning("maintenance: redis unreachable", error=str(exc), in_s=backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            except Exception as exc:  # a failed round must not end promotion and reclaiming
                log.exception("maintenance failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(backoff)

    async def _relay(self) -> None:
        """Move follow-ups from the outboxes into their partitions (Broker.relay)."""
        window_ms = int(self.settings.dedupe_window * 1000)
        while await self.broker.relay(window_ms, 1000) >= 1000:
            pass

    async def _promote(self) -> None:
        while await self.broker.promote(_now_ms(), 1000) >= 1000:
            pass

    async def _report_overdue(self) -> None:
        """Tell the audit about entries held longer than their handlers' timeouts allow
        (timeout + cancel grace + one renewal period): a stuck worker, or sync handlers
        waiting for threads. Written only when it changes."""
        s = self.settings
        now = _now_ms()
        slack_ms = int((s.handler_cancel_grace + s.visibility_timeout / 3) * 1000)
        shortest = min([s.handler_timeout, *(h.timeout for h in self.app.handlers if h.timeout)])
        old = [
            (started, entry)
            for entry, started in self._started.items()
            if now - started > shortest * 1000 + slack_ms and entry not in self._settling
        ]
        overdue: list[tuple[int, Ref, int]] = []
        for started, entry in old:
            delivery = self._inflight.get(entry)
            if delivery is None:
                continue
            allowed_ms = int(self._timeout_of(delivery) * 1000) + slack_ms
            if now - started > allowed_ms:
                overdue.append((started, entry, allowed_ms))
        report = None
        if overdue:
            started, entry, allowed_ms = min(overdue)
            report = msgspec.json.encode(
                {
                    "count": len(overdue),
                    "entry": entry[1],
                    "partition": entry[0],
                    "eventId": self._inflight[entry].event_id,
                    "ageMs": now - started,
                    "allowedMs": allowed_ms,
                }
            ).decode()
            if self._overdue_report is None:
                log.error(
                    "events in flight longer than their handlers' timeouts allow",
                    count=len(overdue),
                    **entry_fields(self._inflight[entry]),
                )
        if report is not None or self._overdue_report is not None:
            await self.broker.report_overdue(self.consumer, report)
        self._overdue_report = report

    def _timeout_of(self, delivery: StreamEntry) -> float:
        try:
            handler = self.app.handler_for(decode_envelope(delivery.envelope).type)
        except Exception:
            handler = None
        if handler is None or handler.timeout is None:
            return self.settings.handler_timeout
        return handler.timeout

    async def _renew(self) -> None:
        await self._report_overdue()
        entries = list(self._inflight)
        for i in range(0, max(len(entries), 1), 1000):
            lost = await self.broker.renew(self.consumer, entries[i : i + 1000], _now_ms())
            # An entry settled by this worker while the script ran is acknowledged, not lost.
            lost = [e for e in lost if e in self._inflight and e not in self._settling]
            if lost:
                log.warning("leases lost to another worker", entries=len(lost))
                for e in lost:
                    log.warning(
                        "lease lost: another worker may run the event", **entry_fields(self._inflight[e])
                    )

    async def _reclaim(self, vt_ms: int) -> None:
        # Reclaimed work goes first: it may take up to one batch beyond `concurrency`
        # (the reader waits meanwhile), or under steady load a dead worker's events
        # would wait behind new ones for free slots.
        room = self.settings.concurrency + self.settings.batch_size - len(self._inflight)
        if room <= 0:
            return
        claimed, dead = await self.broker.reclaim(
            self.consumer,
            vt_ms,
            min(room, self.settings.batch_size),
            self.settings.max_deliveries,
            _now_ms(),
            self._key_limits,
        )
        for event_id, event_type, attempts in dead:
            log.error(
                "dead-lettered",
                event_id=event_id,
                event_type=event_type,
                attempt=attempts,
                reason=f"WorkerLost: delivered {self.settings.max_deliveries} times and no worker "
                "recorded an outcome",
            )
        # An entry of our own still in flight here was renewed late (a blocked loop):
        # its handler is running, so it must not start a second time.
        entries = [e for e in claimed if e.ref not in self._inflight]
        if entries:
            log.info("reclaimed entries of a silent worker", count=len(entries))
            for entry in entries:
                log.info("reclaimed from a silent worker", **entry_fields(entry))
            await self._dispatch(entries, redelivered=True)
