"""The background senders: one thread for ``Client``, one task for ``AsyncClient``. Both
wait and send around the same ``Backlog`` (the rules are there); they differ in their
lock and in how they sleep."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eventstream.client.backlog import Backlog, Item, Settings, Stats, Undelivered, report
from eventstream.results import Accepted, Rejected

Results = list[Accepted | Rejected]
SyncSend = Callable[[Sequence[dict[str, Any]]], Results]
AsyncSend = Callable[[Sequence[dict[str, Any]]], Awaitable[Results]]

CLOSED = "cannot enqueue: the client is closed"


class Sender:
    """What both senders share: the backlog, the options, whether closed."""

    def __init__(self, settings: Settings, max_batch: int) -> None:
        self.settings = settings
        self.backlog = Backlog(settings, max_batch)
        self.closed = False

    def stats(self) -> Stats:
        return self.backlog.stats()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(CLOSED)

    def _must_wait(self) -> bool:
        """A full buffer: raise at once (``on_full="raise"``), or wait for room."""
        if not self.backlog.full:
            return False
        if self.settings.on_full == "raise":
            raise self.backlog.full_error()
        return True

    def _room(self) -> bool:
        return self.closed or not self.backlog.full

    def _stop(self) -> None:
        self.closed = True
        self.backlog.stopping = True

    def _timed_out(self, what: str, timeout_s: float | None) -> TimeoutError:
        pending = len(self.backlog.items)
        return TimeoutError(f"{what}: {pending} events still waiting to be sent after {timeout_s:g} s")


class ThreadSender(Sender):
    """Sends from one daemon thread, started by the first ``put``; flushed at exit."""

    def __init__(self, send: SyncSend, settings: Settings, max_batch: int) -> None:
        super().__init__(settings, max_batch)
        self._send = send
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, event: dict[str, Any]) -> None:
        with self._cond:
            self._check_open()
            if self._must_wait():
                if not self._cond.wait_for(self._room, self.settings.full_timeout_s):
                    raise self.backlog.full_error()
                self._check_open()
            self.backlog.add(event, time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="eventstream-sender", daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._cond.notify_all()

    def flush(self, timeout_s: float | None) -> None:
        with self._cond:
            target = self.backlog.enqueued
            self.backlog.flush_to = max(self.backlog.flush_to, target)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self.backlog.flushed(target), timeout_s):
                raise self._timed_out("flush", timeout_s)

    def close(self) -> None:
        with self._cond:
            if self.closed:
                return
            self._stop()
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self.backlog.items, self.settings.close_timeout_s)
            failed = self.backlog.abandon()
            self._cond.notify_all()
        atexit.unregister(self.close)
        if self._thread is not None and not failed:
            self._thread.join()
        report(self.settings.on_error, failed)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while (wait_s := self.backlog.wait_s(time.monotonic())) != 0:
                    if self.closed and not self.backlog.items:
                        return
                    self._cond.wait(wait_s)
                batch = self.backlog.batch()
            outcome: Results | Exception
            try:
                outcome = self._send([item.event for item in batch])
            except Exception as exc:  # whatever it is, it is reported, never lost
                outcome = exc
            self._settle(batch, outcome)

    def _settle(self, batch: list[Item], outcome: Results | Exception) -> None:
        with self._cond:
            failed = self.backlog.settle(batch, outcome, time.monotonic())
            self._cond.notify_all()
        report(self.settings.on_error, failed)


class TaskSender(Sender):
    """Sends from one task on the running loop, created by the first ``put``. One event
    loop per client: the loop of the first ``enqueue``."""

    def __init__(self, send: AsyncSend, settings: Settings, max_batch: int) -> None:
        super().__init__(settings, max_batch)
        self._send = send
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def put(self, event: dict[str, Any]) -> None:
        async with self._cond:
            self._check_open()
            if self._must_wait():
                try:
                    async with asyncio.timeout(self.settings.full_timeout_s):
                        await self._cond.wait_for(self._room)
                except TimeoutError:
                    raise self.backlog.full_error() from None
                self._check_open()
            self.backlog.add(event, time.monotonic())
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._loop(), name="eventstream-sender")
            self._cond.notify_all()

    async def flush(self, timeout_s: float | None) -> None:
        async with self._cond:
            target = self.backlog.enqueued
            self.backlog.flush_to = max(self.backlog.flush_to, target)
            self._cond.notify_all()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._cond.wait_for(lambda: self.backlog.flushed(target))
            except TimeoutError:
                raise self._timed_out("flush", timeout_s) from None

    async def close(self) -> None:
        failed: list[Undelivered] = []
        async with self._cond:
            if self.closed:
                return
            self._stop()
            self._cond.notify_all()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.close_timeout_s):
                    await self._cond.wait_for(lambda: not self.backlog.items)
            failed = self.backlog.abandon()
            self._cond.notify_all()
        if self._task is not None:
            if failed:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        report(self.settings.on_error, failed)

    async def _loop(self) -> None:
        try:
            await self._send_batches()
        except asyncio.CancelledError:  # e.g. asyncio.run ending with the client still open
            report(self.settings.on_error, self.backlog.abandon())
            raise

    async def _send_batches(self) -> None:
        while True:
            async with self._cond:
                while (wait_s := self.backlog.wait_s(time.monotonic())) != 0:
                    if self.closed and not self.backlog.items:
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait_s):
                            await self._cond.wait()
                batch = self.backlog.batch()
            outcome: Results | Exception
            try:
                outcome = await self._send([item.event for item in batch])
            except Exception as exc:  # whatever it is, it is reported, never lost
                outcome = exc
            async with self._cond:
                failed = self.backlog.settle(batch, outcome, time.monotonic())
                self._cond.notify_all()
            report(self.settings.on_error, failed)
