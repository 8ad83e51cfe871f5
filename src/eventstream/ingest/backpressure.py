"""Load shedding at ingest: refuse new events (503) while the backlog or Redis memory is over its bound.

Two bounds, both settings:

- ``EVENTSTREAM_MAX_BACKLOG``: live events, i.e. queued + in flight (the stream holds
  exactly those: a completed entry is deleted) + scheduled for a retry. 0: no bound.
- ``EVENTSTREAM_MAX_MEMORY_RATIO``: Redis ``used_memory`` as a share of its
  ``maxmemory``; checked only when the server has a ``maxmemory``. 0: no bound.

Measuring costs two round trips (XLEN and ZCARD of every partition in one pipeline, one
per node on a cluster; INFO memory, of every primary on a cluster, where the fullest
counts), so it is done at most once per ``interval_s`` per process, by one request; the requests in
between reuse its verdict, and add the events they admit to the measured backlog. The
bound is therefore soft: each API process may go past it by one request, and several
processes by what the others admitted within one interval. Refusing happens before anything is
enqueued, so a refused request changed nothing. Reads and DLQ operations never
check: they keep working while ingest sheds load. A measurement that fails (Redis, or
one node of a cluster, unreachable) refuses nothing: the write itself answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from eventstream.broker import Broker
from eventstream.errors import BackendUnavailable, Unavailable

CHECK_INTERVAL_S = 0.25
RETRY_AFTER_S = 1


class Overloaded(Unavailable):
    """Ingest is over a backlog or memory bound: 503 with Retry-After, nothing enqueued."""

    def __init__(self, detail: str, bound: str) -> None:
        super().__init__(detail, RETRY_AFTER_S)
        self.bound = bound


Verdict = tuple[str, str]  # (detail, name of the bound)


@dataclass(frozen=True, slots=True)
class Reading:
    backlog: int
    used_memory: int
    max_memory: int


class Backpressure:
    """The cached verdict of one API process."""

    def __init__(
        self,
        broker: Broker,
        max_backlog: int,
        max_memory_ratio: float,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self.broker = broker
        self.max_backlog = max_backlog
        self.max_memory_ratio = max_memory_ratio
        self.interval_s = interval_s
        self._verdict: Verdict | None = None  # (detail, bound) while over a bound
        self._fresh_until = 0.0
        self._estimate = 0  # the last measured backlog plus the events admitted since
        self._measuring: asyncio.Task[tuple[Verdict | None, int]] | None = None

    @property
    def enabled(self) -> bool:
        return self.max_backlog > 0 or self.max_memory_ratio > 0

    async def check(self, events: int = 1) -> None:
        """Raise Overloaded when a bound is passed, else count ``events`` as admitted.

        Redis is measured at most once per interval; in between, the events this
        process admitted are added to the measured backlog, so one fast process cannot
        run far past the bound before the next measurement.
        """
        if not self.enabled:
            return
        if time.monotonic() >= self._fresh_until:
            task = self._measuring
            if task is None:
                task = asyncio.get_running_loop().create_task(self._measure())
                task.add_done_callback(self._measured)
                self._measuring = task
            # Shielded: a client that goes away must not cancel the measurement others
            # await. A node that cannot be read (down, failing over) gives no verdict: the
            # last one stands, and the write decides, which fails only where Redis does
            # (on a cluster, on the partitions of that node).
            with contextlib.suppress(BackendUnavailable):
                await asyncio.shield(task)
        if self._verdict is not None:
            raise Overloaded(*self._verdict)
        if self.max_backlog > 0:
            if self._estimate >= self.max_backlog:
                raise Overloaded(*self._over_backlog(self._estimate))
            self._estimate += events

    def _measured(self, task: asyncio.Task[tuple[Verdict | None, int]]) -> None:
        self._measuring = None
        if task.cancelled():
            return
        if task.exception() is None:
            self._verdict, self._estimate = task.result()
        # measured or not, the next try is an interval away: an unreachable node is not
        # asked again by every request
        self._fresh_until = time.monotonic() + self.interval_s

    def _over_backlog(self, backlog: int) -> Verdict:
        return (
            f"ingest is shedding load: {backlog} events are queued, in flight or scheduled, "
            f"at or over EVENTSTREAM_MAX_BACKLOG={self.max_backlog}; nothing was enqueued, "
            "retry later (or add workers)",
            "EVENTSTREAM_MAX_BACKLOG",
        )

    async def read(self) -> Reading:
        backlog, memory = await self.broker.backlog(with_memory=self.max_memory_ratio > 0)
        return Reading(
            backlog=backlog,
            used_memory=int(memory.get("used_memory", 0)),
            max_memory=int(memory.get("maxmemory", 0)),
        )

    async def _measure(self) -> tuple[Verdict | None, int]:
        reading = await self.read()
        if self.max_backlog > 0 and reading.backlog >= self.max_backlog:
            return self._over_backlog(reading.backlog), reading.backlog
        if self.max_memory_ratio > 0 and reading.max_memory > 0:
            ratio = reading.used_memory / reading.max_memory
            if ratio >= self.max_memory_ratio:
                detail = (
                    f"ingest is shedding load: Redis uses {ratio:.0%} of its maxmemory "
                    f"({reading.used_memory} of {reading.max_memory} bytes), at or over "
                    f"EVENTSTREAM_MAX_MEMORY_RATIO={self.max_memory_ratio:g}; nothing was enqueued, "
                    "retry later"
                )
                return (detail, "EVENTSTREAM_MAX_MEMORY_RATIO"), reading.backlog
        return None, reading.backlog
