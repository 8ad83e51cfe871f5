"""Run one handler on one delivery and say what should become of the event."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import msgspec

from eventstream.app import EventStream, HandlerFunc
from eventstream.broker import StreamEntry
from eventstream.errors import PermanentError, Retry
from eventstream.event import Envelope, Event, decode_envelope
from eventstream.settings import Settings
from eventstream.worker.retry import backoff_s

TRACEBACK_LIMIT = 8_000


@dataclass(frozen=True, slots=True)
class Done:
    delivery: StreamEntry
    envelope: Envelope
    attempt: int
    handler_s: float
    skipped: bool = False  # already in the store: acknowledged without running


@dataclass(frozen=True, slots=True)
class RetryLater:
    delivery: StreamEntry
    due_ms: int
    attempts: int  # attempts made, this one included
    first_failure_ms: int
    reason: str
    type: str = ""


@dataclass(frozen=True, slots=True)
class Dead:
    delivery: StreamEntry
    type: str
    attempts: int
    reason: str
    traceback: str
    first_failure_ms: int
    last_failure_ms: int
    handler_ran: bool = True


Outcome = Done | RetryLater | Dead


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Dispatcher:
    """Finds the handler for a delivery, runs it under its timeout, classifies the result."""

    def __init__(self, app: EventStream, settings: Settings, executor: Executor) -> None:
        self.app = app
        self.settings = settings
        self.executor = executor
        # One slot per handler thread, held until the thread is done with the handler
        # (even after a timeout): a sync handler's timeout starts when a thread runs it,
        # not while it waits for one.
        self._threads = asyncio.Semaphore(settings.sync_threads)
        self._submit: Callable[[HandlerFunc, Event], Future[object]] = executor.submit

    def propagate_context(self) -> None:
        """Run sync handlers in a copy of the caller's context (so they see its current span)."""
        submit = self.executor.submit
        self._submit = lambda func, event: submit(contextvars.copy_context().run, func, event)

    async def run(self, d: StreamEntry) -> Outcome:
        attempt = d.attempts + 1
        try:
            env = decode_envelope(d.envelope)
            event = Event.from_envelope(env, attempt)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError, OSError) as exc:
            # OverflowError / ValueError / OSError: a receivedAt no datetime can hold
            now = _now_ms()
            return Dead(d, "", d.attempts, f"MalformedEvent: {exc}", "", now, now, handler_ran=False)
        handler = self.app.handler_for(env.type)
        if handler is None:
            now = _now_ms()
            return Dead(
                d,
                env.type,
                d.attempts,
                f"NoHandler: no handler is registered for event type {env.type!r} in app {self.app.name!r}",
                "",
                d.first_failure_ms or now,
                now,
                handler_ran=False,
            )
        timeout_s = handler.timeout if handler.timeout is not None else self.settings.handler_timeout
        if not handler.is_async:
            await self._threads.acquire()  # waiting for a thread is not part of the try
        start = time.perf_counter()
        delay_override: float | None = None
        try:
            if handler.is_async:
                await _with_deadline(handler.func(event), timeout_s)  # type: ignore[arg-type]
            else:
                await asyncio.wait_for(asyncio.wrap_future(self._in_thread(handler.func, event)), timeout_s)
            return Done(d, env, attempt, time.perf_counter() - start)
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            now = _now_ms()
            return Dead(d, env.type, attempt, _reason(exc), _tb(exc), d.first_failure_ms or now, now)
        except Retry as exc:
            delay_override = exc.delay
            failure: BaseException = exc
        except TimeoutError as exc:
            if time.perf_counter() - start >= timeout_s * 0.999:
                failure = TimeoutError(f"handler took longer than its timeout of {timeout_s:g}s")
            else:
                failure = exc
        except Exception as exc:
            failure = exc
        return self._failed(d, env, handler.max_attempts, handler.retry_delay, failure, delay_override)

    def _in_thread(self, func: HandlerFunc, event: Event) -> Future[object]:
        """Submit to the executor; the thread slot is released when the call returns."""
        loop = asyncio.get_running_loop()

        def release(_: Future[object]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._threads.release)

        try:
            future = self._submit(func, event)
        except BaseException:
            self._threads.release()
            raise
        future.add_done_callback(release)
        return future

    def _failed(
        self,
        d: StreamEntry,
        env: Envelope,
        max_attempts: int | None,
        retry_delay: float | None,
        exc: BaseException,
        delay_override: float | None,
    ) -> Outcome:
        s = self.settings
        now = _now_ms()
        made = d.attempts + 1
        first = d.first_failure_ms or now
        limit = max_attempts if max_attempts is not None else s.max_attempts
        if made >= limit:
            return Dead(
                d,
                env.type,
                made,
                f"{_reason(exc)} (gave up after {made} attempt{'s' if made > 1 else ''})",
                _tb(exc),
                first,
                now,
            )
        if delay_override is not None:
            delay = max(0.0, delay_override)
        else:
            base = retry_delay if retry_delay is not None else s.retry_delay
            delay = backoff_s(made, base, s.retry_max_delay)
        return RetryLater(d, now + int(delay * 1000), made, first, _reason(exc), env.type)


class _Expiry:
    """Cancels a task at its deadline and remembers that it did."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False

    def __call__(self) -> None:
        self.expired = True
        self.task.cancel()


async def _with_deadline(awaitable: Awaitable[object], timeout_s: float) -> None:
    """``async with asyncio.timeout()`` for the hot path: one timer, no context manager."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always called from a task
        raise RuntimeError("handlers run in tasks")
    loop = asyncio.get_running_loop()
    expiry = _Expiry(task)
    timer = loop.call_at(loop.time() + timeout_s, expiry)
    try:
        await awaitable
    except asyncio.CancelledError:
        # ours alone (no other cancel pending, e.g. a shutdown): it is a timeout
        if expiry.expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()


def _tb(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text[-TRACEBACK_LIMIT:]
