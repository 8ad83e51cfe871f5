"""The threads that run sync handlers, cheaply enough for a no-op handler to drain as
fast as an async one.

A try is handed to the threads through one queue; its timeout starts when a thread
takes it (not while it waits for one). A thread that finishes a try puts it on a list
and wakes the event loop only when the list was empty, so a burst of short tries costs
the loop one wake-up, not one per try (a ``ThreadPoolExecutor`` with ``wrap_future``
and ``wait_for`` costs a concurrent future, a condition, a loop future, a timer task and
a wake-up each).

A thread cannot be stopped: one that outlives its try's timeout is counted as stuck and
a fresh thread takes its place at once, so stuck handlers never leave the others
without a thread. The stuck thread ends when its handler returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HandlerThreads"]

_QUEUED, _RUNNING, _OVER, _DROPPED = range(4)


class _Try:
    __slots__ = (
        "context", "error", "event", "expired", "finished", "func", "future", "started", "state", "timeout_s",
        "timer",
    )  # fmt: skip

    def __init__(
        self,
        func: Callable[[Any], object],
        event: object,
        timeout_s: float,
        future: asyncio.Future[None],
        context: contextvars.Context | None,
    ) -> None:
        self.func = func
        self.event = event
        self.timeout_s = timeout_s
        self.future = future
        self.context = context
        self.state = _QUEUED
        self.started = 0.0
        self.finished = 0.0
        self.error: BaseException | None = None
        self.expired = False
        self.timer: asyncio.TimerHandle | None = None


class HandlerThreads:
    """Up to ``size`` threads (started as needed) running sync handlers for one event loop."""

    def __init__(self, size: int, name: str = "handler") -> None:
        self.size = size
        self.name = name
        self.stuck = 0  # threads still running a handler past its timeout
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Try | None] = queue.SimpleQueue()
        self._live = 0  # threads that are not stuck
        self._idle = 0  # threads waiting for a try that no submitted try has claimed yet
        self._done: collections.deque[_Try] = collections.deque()
        self._waking = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._numbers = 0

    async def run(
        self, func: Callable[[Any], object], event: object, timeout_s: float, context: bool = False
    ) -> tuple[float, BaseException | None]:
        """Run ``func(event)`` in a thread: how long it ran (seconds) and what it raised
        (returned, not raised: a StopIteration would not come out of a coroutine as itself).

        TimeoutError when it runs longer than ``timeout_s``; CancelledError (it is left to
        run if it started) when the caller is cancelled. ``context``: run it in a copy of
        the caller's context."""
        loop = self._loop = asyncio.get_running_loop()
        job = _Try(
            func, event, timeout_s, loop.create_future(), contextvars.copy_context() if context else None
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the handler threads are shut down")
            start = self._idle == 0 and self._live < self.size
            if start:
                self._live += 1
            elif self._idle:
                self._idle -= 1
        if start:
            self._start_thread()
        self._queue.put(job)
        job.timer = loop.call_later(timeout_s, self._check, job)
        try:
            await job.future
        except asyncio.CancelledError:
            with self._lock:
                if job.state == _QUEUED:
                    job.state = _DROPPED  # no thread will run it
            raise
        finally:
            job.timer.cancel()
        if job.expired:
            raise TimeoutError(f"handler took longer than its timeout of {timeout_s:g}s")
        return job.finished - job.started, job.error

    def shutdown(self) -> None:
        """Threads end once their current handler returns; tries not started are not run."""
        with self._lock:
            self._closed = True
            live, self._live, self._idle = self._live, 0, 0
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None and job.state == _QUEUED:
                    job.state = _DROPPED
                    job.future.cancel()
        for _ in range(live):
            self._queue.put(None)

    # ---- the event loop's side --------------------------------------------------------

    def _check(self, job: _Try) -> None:
        """At a try's deadline as it stood: still queued, look again a timeout later;
        running past its timeout, the try has timed out and its thread is replaced."""
        loop = self._loop
        assert loop is not None
        replace = False
        with self._lock:
            if job.state == _QUEUED:
                left = job.timeout_s
            elif job.state == _RUNNING:
                left = job.started + job.timeout_s - time.monotonic()
                if left <= 0:
                    job.expired = True
                    self.stuck += 1
                    replace = not self._closed
                    if replace:
                        self._live += 1  # the stuck thread no longer counts
            else:
                return
        if job.expired:
            if replace:
                self._start_thread()
            if not job.future.done():
                job.future.set_result(None)
            return
        job.timer = loop.call_later(left, self._check, job)

    def _collect(self) -> None:
        self._waking = False
        done = self._done
        while done:
            job = done.popleft()
            if not job.future.done():
                job.future.set_result(None)

    # ---- the threads' side ------------------------------------------------------------

    def _start_thread(self) -> None:
        """Start a thread already counted in ``_live``; uncount it if it cannot start."""
        self._numbers += 1
        try:
            threading.Thread(target=self._work, name=f"{self.name}-{self._numbers}", daemon=True).start()
        except BaseException:  # e.g. RuntimeError: can't start new thread
            with self._lock:
                self._live -= 1
            raise

    def _work(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            job = get()
            if job is None:
                return
            with lock:
                if self._closed:
                    return
                if job.state != _QUEUED:  # dropped: its caller was cancelled
                    self._idle = min(self._idle + 1, self._live)
                    continue
                job.state = _RUNNING
                job.started = time.monotonic()
            try:
                if job.context is None:
                    job.func(job.event)
                else:
                    job.context.run(job.func, job.event)
            except BaseException as exc:  # anything the handler raised is its try's outcome
                job.error = exc
            job.finished = time.monotonic()
            with lock:
                job.state = _OVER
                stuck = job.expired
                if stuck:
                    self.stuck -= 1  # replaced when it got stuck: it ends here
                else:  # at most one unclaimed turn per thread
                    self._idle = min(self._idle + 1, self._live)
            self._done.append(job)
            if not self._waking:
                self._waking = True
                loop = self._loop
                if loop is not None:
                    with contextlib.suppress(RuntimeError):  # the loop is closed
                        loop.call_soon_threadsafe(self._collect)
            if stuck:
                return
