"""Run one handler on one delivery and say what should become of the event.

Whatever the handler does short of killing the process ends as an outcome: a return
is ``Done``; any ``BaseException`` (``SystemExit`` and ``KeyboardInterrupt`` included)
is a failed try, retried or dead-lettered with a readable reason. A handler that
outlives its timeout is cancelled; one that ignores the cancellation for
``handler_cancel_grace`` seconds is abandoned: its try is recorded as failed and the
worker goes on without it (the coroutine or thread is left to itself).
"""

from __future__ import annotations

import asyncio
import math
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import msgspec

from eventstream.app import EventStream, Handler
from eventstream.broker import StreamEntry
from eventstream.errors import PermanentError, Retry
from eventstream.event import Envelope, Event, FollowUp, decode_envelope
from eventstream.settings import Settings
from eventstream.worker.reasons import TRACEBACK_LIMIT, clip, describe, format_traceback
from eventstream.worker.retry import backoff_s
from eventstream.worker.threads import HandlerThreads

__all__ = ["Dead", "Dispatcher", "Done", "Outcome", "RetryLater"]


@dataclass(frozen=True, slots=True)
class Done:
    delivery: StreamEntry
    envelope: Envelope
    attempt: int
    handler_s: float
    skipped: bool = False  # already in the store: acknowledged without running
    follow_ups: tuple[FollowUp, ...] = ()  # what the try emitted (Event.emit)


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

# Called when a handler is abandoned: the task that still runs it, and the outcome
# recorded for its try in its place.
AbandonHook = Callable[[asyncio.Task[Any], Outcome], None]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _requested_delay(exc: Retry) -> float | None:
    """The delay a ``Retry`` asks for, or None (the backoff) when it is not a usable number."""
    try:
        delay = float(exc.delay) if exc.delay is not None else math.nan
    except BaseException:  # not a number, or a property that raises
        return None
    return None if math.isnan(delay) else delay


class Dispatcher:
    """Finds the handler for a delivery, runs it under its timeout, classifies the result."""

    def __init__(self, app: EventStream, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.on_abandon: AbandonHook | None = None
        # Sync handlers run there; a try's timeout starts when a thread takes it.
        self.threads = HandlerThreads(settings.sync_threads)
        self._context = False

    @property
    def stuck_threads(self) -> int:
        """Sync handlers still running in a thread after their timeout."""
        return self.threads.stuck

    def propagate_context(self) -> None:
        """Run sync handlers in a copy of the caller's context (so they see its current span)."""
        self._context = True

    def shutdown(self) -> None:
        self.threads.shutdown()

    async def run(self, d: StreamEntry) -> Outcome:
        attempt = d.attempts + 1
        try:
            env = decode_envelope(d.envelope)
            event = Event.from_envelope(env, attempt)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError, OSError) as exc:
            # OverflowError / ValueError / OSError: a receivedAt no datetime can hold
            now = _now_ms()
            return Dead(
                d, "", d.attempts, f"MalformedEvent: {describe(exc)}", "", now, now, handler_ran=False
            )
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
        start = time.perf_counter()
        delay_override: float | None = None
        try:
            if handler.is_async:
                expiry = _Expiry(self, d, env, handler, timeout_s)
                await _with_deadline(handler.func(event), expiry)  # type: ignore[arg-type]
                took = time.perf_counter() - start
            else:  # waiting for a thread is not part of the try
                took, error = await self.threads.run(handler.func, event, timeout_s, self._context)
                if error is not None:
                    start = time.perf_counter() - took  # the try's own start (a TimeoutError below)
                    raise error
            emitted = event._follow_ups
            return Done(d, env, attempt, took, False, tuple(emitted) if emitted else ())
        except asyncio.CancelledError:
            raise
        except PermanentError as exc:
            now = _now_ms()
            return Dead(
                d, env.type, attempt, describe(exc), format_traceback(exc), d.first_failure_ms or now, now
            )
        except Retry as exc:
            delay_override = _requested_delay(exc)
            failure: BaseException = exc
        except TimeoutError as exc:
            if time.perf_counter() - start >= timeout_s * 0.999:
                failure = TimeoutError(f"handler took longer than its timeout of {timeout_s:g}s")
            else:
                failure = exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt...: a failed try like any other
            failure = exc
        return self._failed(d, env, handler, failure, delay_override)

    def crashed(self, d: StreamEntry, exc: BaseException) -> Outcome:
        """The outcome of a try whose running itself failed (a bug, or a tracing hook that raised)."""
        try:
            env = decode_envelope(d.envelope)
        except Exception:
            now = _now_ms()
            return Dead(
                d, "", d.attempts, f"MalformedEvent: {describe(exc)}", "", now, now, handler_ran=False
            )
        return self._failed(d, env, self.app.handler_for(env.type), exc, None)

    def _abandon(self, stuck: _Expiry, task: asyncio.Task[Any]) -> None:
        if task.done() or self.on_abandon is None:
            return
        grace = self.settings.handler_cancel_grace
        failure = TimeoutError(
            f"handler took longer than its timeout of {stuck.timeout_s:g}s and ignored cancellation "
            f"for {grace:g}s; abandoned"
        )
        outcome = self._failed(stuck.delivery, stuck.envelope, stuck.handler, failure, None, _where(task))
        self.on_abandon(task, outcome)

    def _failed(
        self,
        d: StreamEntry,
        env: Envelope,
        handler: Handler | None,
        exc: BaseException,
        delay_override: float | None,
        traceback: str | None = None,
    ) -> Outcome:
        s = self.settings
        now = _now_ms()
        made = d.attempts + 1
        first = d.first_failure_ms or now
        limit = s.max_attempts if handler is None or handler.max_attempts is None else handler.max_attempts
        reason = describe(exc)
        if made >= limit:
            return Dead(
                d,
                env.type,
                made,
                f"{reason} (gave up after {made} attempt{'s' if made > 1 else ''})",
                clip(traceback, TRACEBACK_LIMIT) if traceback is not None else format_traceback(exc),
                first,
                now,
            )
        if delay_override is not None:
            delay = min(max(0.0, delay_override), s.retry_max_delay)  # inf -> the cap
        else:
            base = s.retry_delay if handler is None or handler.retry_delay is None else handler.retry_delay
            delay = backoff_s(made, base, s.retry_max_delay)
        return RetryLater(d, now + int(delay * 1000), made, first, reason, env.type)


def _where(task: asyncio.Task[Any]) -> str:
    """Where a suspended task is stuck: the frames of its chain of awaits, innermost last."""
    frames: list[FrameType] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 100:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    try:
        summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
        return "Where the handler was stuck (most recent call last):\n" + "".join(summary.format())
    except Exception:
        return ""


class _Expiry:
    """Cancels a handler's task at its deadline and remembers that it did; abandons the
    handler if it is still running ``handler_cancel_grace`` seconds later."""

    __slots__ = ("delivery", "dispatcher", "envelope", "expired", "handler", "late", "task", "timeout_s")

    def __init__(
        self, dispatcher: Dispatcher, d: StreamEntry, env: Envelope, handler: Handler, timeout_s: float
    ) -> None:
        self.dispatcher = dispatcher
        self.delivery = d
        self.envelope = env
        self.handler = handler
        self.timeout_s = timeout_s
        self.expired = False
        self.late: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None

    def __call__(self) -> None:
        assert self.task is not None
        self.expired = True
        self.task.cancel()
        self.late = asyncio.get_running_loop().call_later(
            self.dispatcher.settings.handler_cancel_grace, self.dispatcher._abandon, self, self.task
        )


async def _with_deadline(awaitable: Awaitable[object], expiry: _Expiry) -> None:
    """``async with asyncio.timeout()`` for the hot path: one timer, no context manager."""
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always called from a task
        raise RuntimeError("handlers run in tasks")
    expiry.task = task
    loop = asyncio.get_running_loop()
    timer = loop.call_at(loop.time() + expiry.timeout_s, expiry)
    try:
        await awaitable
    except asyncio.CancelledError:
        # ours alone (no other cancel pending, e.g. a shutdown): it is a timeout
        if expiry.expired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
        if expiry.late is not None:
            expiry.late.cancel()
