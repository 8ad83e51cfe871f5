"""Background sending without I/O: the buffer, when a batch is due, what a batch's outcome
means. ``Client`` (a thread) and ``AsyncClient`` (a task) share it; each guards it with
its own lock and does the waiting and the sending.

The rules:

- the buffer holds at most ``max_queue`` events, the batch being sent included, so
  memory is bounded; events leave it in the order they came, once settled;
- a batch (at most ``batch_size`` events) is due when that many wait, when the oldest
  waited ``flush_interval_s``, or when a flush or a close asks;
- a batch answered item by item is settled: accepted items are sent, rejected ones
  undelivered (reported with their ``Rejected``);
- a batch whose retries ran out on a failure that may pass (``Unavailable``,
  ``RateLimited``) stays at the head of the buffer and is tried again after a pause,
  for as long as it takes: the buffer then fills and ``enqueue`` blocks or raises;
- a batch that failed for good (``AuthError``, ``UnexpectedResponse``, ...) is
  undelivered, each item reported with the exception.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from eventstream.errors import BufferFull, RateLimited, Unavailable
from eventstream.results import Accepted, Rejected

log = structlog.get_logger("eventstream.client")


@dataclass(frozen=True, slots=True)
class Undelivered:
    """An enqueued event that will not be delivered: its idempotency ``key`` (what
    ``enqueue`` returned), the ``event`` as sent (a batch item dict, ``id`` included), and
    why: the server's ``Rejected`` or the exception its batch failed with."""

    key: str
    event: dict[str, Any]
    error: Rejected | Exception


OnError = Callable[[list[Undelivered]], object]


@dataclass(frozen=True, slots=True)
class Stats:
    """Background sending so far: events ``pending`` (buffered or being sent), ``sent``
    (accepted by the server, duplicates of earlier tries included) and ``failed`` (reported
    undelivered)."""

    pending: int
    sent: int
    failed: int


@dataclass(frozen=True, slots=True)
class Settings:
    """The options of ``enable_background`` (see ``Client.enable_background``)."""

    max_queue: int = 10_000
    batch_size: int | None = None
    flush_interval_s: float = 0.5
    on_full: Literal["block", "raise"] = "block"
    full_timeout_s: float | None = None
    on_error: OnError | None = None
    close_timeout_s: float = 30.0
    retry_pause_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_queue < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("max_queue and batch_size must be at least 1")
        if self.on_full not in ("block", "raise"):
            raise ValueError(f'on_full must be "block" or "raise", not {self.on_full!r}')
        timeouts = (self.flush_interval_s, self.close_timeout_s, self.retry_pause_s, self.full_timeout_s or 0)
        if min(timeouts) < 0:
            raise ValueError("intervals and timeouts cannot be negative")


@dataclass(slots=True)
class Item:
    seq: int  # 1, 2, ... in the order enqueued
    at: float  # monotonic time enqueued
    event: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.event["id"])


TRANSIENT = (Unavailable, RateLimited)


class Backlog:
    """The buffer and its counters; not thread-safe (its owner holds a lock)."""

    def __init__(self, settings: Settings, max_batch: int) -> None:
        self.settings = settings
        self.batch_size = settings.batch_size or max_batch
        self.items: deque[Item] = deque()
        self.enqueued = 0
        self.sent = 0
        self.failed = 0
        self.flush_to = 0  # every item up to this seq is due now
        self.stopping = False  # closing: everything is due
        self.retry_at = 0.0  # after a failure that may pass, no try before this
        self.last_error: Exception | None = None

    @property
    def full(self) -> bool:
        return len(self.items) >= self.settings.max_queue

    def full_error(self) -> BufferFull:
        n = len(self.items)
        return BufferFull(f"the background buffer is full ({n} events waiting to be sent)", n)

    def add(self, event: dict[str, Any], now: float) -> None:
        self.enqueued += 1
        self.items.append(Item(self.enqueued, now, event))

    def wait_s(self, now: float) -> float | None:
        """0: send a batch now; else how long to wait for one to be due (None: until told)."""
        if not self.items:
            return None
        if now < self.retry_at:
            return self.retry_at - now
        head = self.items[0]
        if len(self.items) >= self.batch_size or self.stopping or head.seq <= self.flush_to:
            return 0.0
        return max(0.0, head.at + self.settings.flush_interval_s - now)

    def batch(self) -> list[Item]:
        return [self.items[i] for i in range(min(self.batch_size, len(self.items)))]

    def flushed(self, seq: int) -> bool:
        """Every item up to ``seq`` is settled."""
        return not self.items or self.items[0].seq > seq

    def settle(
        self, batch: Sequence[Item], outcome: Sequence[Accepted | Rejected] | Exception, now: float
    ) -> list[Undelivered]:
        """Take the batch's outcome; return what is undelivered (to report)."""
        if isinstance(outcome, TRANSIENT):
            self.last_error = outcome
            self.retry_at = now + self.settings.retry_pause_s
            return []
        done = self._pop(batch)
        if isinstance(outcome, Exception):
            self.last_error = outcome
            failed = [Undelivered(i.key, i.event, outcome) for i in done]
        else:
            pairs = zip(done, outcome, strict=False)
            failed = [Undelivered(i.key, i.event, r) for i, r in pairs if isinstance(r, Rejected)]
        self.failed += len(failed)
        self.sent += len(done) - len(failed)
        return failed

    def _pop(self, batch: Sequence[Item]) -> list[Item]:
        """The batch's items still at the head (a close that gave up may have taken them)."""
        done: list[Item] = []
        for item in batch:
            if not self.items or self.items[0] is not item:
                break
            done.append(self.items.popleft())
        return done

    def abandon(self) -> list[Undelivered]:
        """Give up on every item left (a close that timed out)."""
        why = self.last_error
        if why is None:
            closed = Unavailable(
                "the client was closed (or its event loop ended) before these events could be sent"
            )
            closed.status, closed.problem = 0, {}
            why = closed
        failed = [Undelivered(i.key, i.event, why) for i in self.items]
        self.items.clear()
        self.failed += len(failed)
        return failed

    def stats(self) -> Stats:
        return Stats(len(self.items), self.sent, self.failed)


def report(on_error: OnError | None, failed: list[Undelivered]) -> None:
    """Hand the undelivered events to ``on_error``; with none (or if it raises), log them."""
    if not failed:
        return
    if on_error is not None:
        try:
            on_error(failed)
            return
        except Exception:
            log.exception("background_on_error_failed", count=len(failed))
    log.error(
        "background_events_undelivered",
        count=len(failed),
        keys=[f.key for f in failed],
        error=str(failed[0].error),
    )
