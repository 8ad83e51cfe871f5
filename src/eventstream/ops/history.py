"""Metrics history: the deployment's figures over the last minutes, kept in Redis, so that
a dashboard opened now shows them at once (``GET /metrics/history``).

Every API and worker process runs ``run``: once per step (``STEP_S``) it records a
sample of the deployment (``record``), unless another process already did. A sample
holds the counter totals shown (``RATES``), the gauges shown (``GAUGES``) and the time it
was taken; samples go to one stream of the deployment (eventstream.broker.samples),
one per step, the first writer of a step winning, trimmed to the last ``KEEP_S``.

``read`` turns the samples into points: per step, the rates over the step before
(from the counters' differences and the samples' real times) and the gauges. A counter
that went down (a Redis restarted empty, a FLUSHALL) counts from zero again, as
Prometheus's ``rate`` does: never a negative rate. A step without a sample (no process
was running) is a gap: a point with neither rates nor gauges, and the point after it
has no rates.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from eventstream.broker import Broker
from eventstream.errors import BackendUnavailable
from eventstream.ops import metrics
from eventstream.settings import Settings

log = structlog.get_logger("eventstream.ops.history")

STEP_S = 5
MAX_WINDOW_S = 1200  # what GET /metrics/history may ask for: 20 minutes
# Two steps beyond the longest window: its first point's rates need the sample before it.
KEEP_S = MAX_WINDOW_S + 2 * STEP_S
DEFAULT_WINDOW_S = 900

# Counters whose rates are shown, and the gauges: snapshot field -> JSON name (metrics.py's).
RATES: dict[str, str] = {
    f: metrics.COUNTERS[f][0] for f in ("received", "processed", "failed", "retried", "dead_lettered")
}
GAUGES: dict[str, str] = {
    **{f: metrics.GAUGES[f][0] for f in ("queued", "pending", "scheduled", "dlq", "workers")},
    "oldest_waiting_ms": "oldestWaitingMs",
}
TASK_NAME = "metrics history"  # the asyncio task of ``run`` in the API and worker processes
TAKEN = "t"  # the field of the time a sample was taken (ms)

# Samples of steps this far ahead of the reader's clock are not shown (a writer whose
# clock is ahead), and a sampler that finds one warns (once per WARN_AGAIN_MS).
CLOCK_SKEW_MS = 60_000
WARN_AGAIN_MS = 600_000

# After a failed sample, the next try waits this many steps, doubling up to the cap.
MAX_BACKOFF_STEPS = 8


@dataclass(frozen=True, slots=True)
class Point:
    """One step of the history, named by its start (ms). ``rates``: per second over the
    step before, by JSON name (None: no sample in this step or the one before);
    ``gauges``: by JSON name, as sampled (None: no sample in this step, a gap)."""

    t_ms: int
    rates: dict[str, float] | None
    gauges: dict[str, int] | None


def step_of(ms: int, step_s: float = STEP_S) -> int:
    """The start (ms) of the step that holds ``ms``."""
    step_ms = int(step_s * 1000)
    return ms - ms % step_ms


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def record(broker: Broker, now_ms: int, worker_ttl_ms: int, step_s: float = STEP_S) -> bool:
    """Record the sample of the step holding ``now_ms``, unless the history already has
    one for it (or a later step): True when this call wrote it. The check comes first,
    so a process that comes second skips the snapshot."""
    wrote, _ = await _record(broker, now_ms, worker_ttl_ms, step_s)
    return wrote


async def _record(broker: Broker, now_ms: int, worker_ttl_ms: int, step_s: float) -> tuple[bool, int | None]:
    """``record``, and the newest step the history held before (None: none)."""
    step = step_of(now_ms, step_s)
    last = await broker.history.last_ms()
    if last is not None and last >= step:
        return False, last
    snap = await metrics.snapshot(broker, now_ms, worker_ttl_ms)
    sample = {TAKEN: now_ms}
    sample.update({f: snap.counters.get(f, 0) for f in RATES})
    sample.update({f: snap.gauges.get(f, 0) for f in GAUGES if f != "oldest_waiting_ms"})
    sample["oldest_waiting_ms"] = await broker.oldest_waiting_ms(now_ms)
    return await broker.history.add(step, sample, step - KEEP_S * 1000), last


async def read(
    broker: Broker, window_s: int = DEFAULT_WINDOW_S, *, now_ms: int | None = None, step_s: float = STEP_S
) -> list[Point]:
    """The points of the steps that started in the last ``window_s`` seconds, oldest first,
    from the first step sampled to the last (see ``points``)."""
    now = _now_ms() if now_ms is None else now_ms
    from_ms = now - window_s * 1000
    samples = await broker.history.since(from_ms - int(step_s * 1000))
    return points(samples, from_ms, step_s, until_ms=now + CLOCK_SKEW_MS)


def points(
    samples: Sequence[tuple[int, Mapping[str, str]]],
    from_ms: int,
    step_s: float = STEP_S,
    until_ms: int | None = None,
) -> list[Point]:
    """Points from (step start ms, fields) samples: one per step from the first sample at
    or after ``from_ms`` to the last one at or before ``until_ms``; a step without a
    sample is a gap (a point with neither rates nor gauges). Samples that cannot be read
    are left out (gaps too)."""
    step_ms = int(step_s * 1000)
    by_step = {t: s for t, fields in samples if t % step_ms == 0 and (s := _parse(fields)) is not None}
    shown = sorted(t for t in by_step if t >= from_ms and (until_ms is None or t <= until_ms))
    if not shown:
        return []
    out: list[Point] = []
    for t in range(shown[0], shown[-1] + step_ms, step_ms):
        now = by_step.get(t)
        if now is None:
            out.append(Point(t, None, None))
            continue
        before = by_step.get(t - step_ms)
        rates = None if before is None else _rates(before, now, step_ms)
        out.append(Point(t, rates, {name: now[f] for f, name in GAUGES.items()}))
    return out


def _parse(fields: Mapping[str, str]) -> dict[str, int] | None:
    try:
        return {f: int(fields.get(f, 0)) for f in (TAKEN, *RATES, *GAUGES)}
    except ValueError:
        return None


def _rates(before: Mapping[str, int], now: Mapping[str, int], step_ms: int) -> dict[str, float]:
    """Per second between two samples, over the real time between them (the step's
    length if their clocks disagree); a counter that went down counts from zero."""
    elapsed_ms = now[TAKEN] - before[TAKEN]
    if elapsed_ms <= 0:
        elapsed_ms = step_ms
    out: dict[str, float] = {}
    for f, name in RATES.items():
        grown = now[f] - before[f] if now[f] >= before[f] else now[f]
        out[name] = round(grown * 1000 / elapsed_ms, 3)
    return out


class Sampler:
    """One process's part: at most one try per step, at a moment of the step of its own
    (``offset_ms``, random by default, so that the processes do not all read at once and
    those coming after the first one find the step written and skip the snapshot).

    A failure is logged once, with the next success logged too; tries wait longer after
    each failure (up to ``MAX_BACKOFF_STEPS`` steps)."""

    def __init__(
        self, broker: Broker, worker_ttl_ms: int, step_s: float = STEP_S, offset_ms: int | None = None
    ) -> None:
        self.broker = broker
        self.worker_ttl_ms = worker_ttl_ms
        self.step_s = step_s
        self.step_ms = int(step_s * 1000)
        self.offset_ms = random.randrange(self.step_ms // 2) if offset_ms is None else offset_ms
        self._tried = -1  # the start of the last step tried
        self._failures = 0
        self._not_before = 0  # ms: the backoff after failures
        self._skew_warned_ms: int | None = None

    def next_try_ms(self, now_ms: int) -> int:
        """When the next try is due (``now_ms`` or later)."""
        step = step_of(now_ms, self.step_s)
        at = step + self.offset_ms if step > self._tried else step + self.step_ms + self.offset_ms
        if at < now_ms and step > self._tried:
            at = now_ms  # late in this step, yet not tried: now
        return max(at, self._not_before)

    async def tick(self, now_ms: int) -> bool:
        """Try the step holding ``now_ms`` if it is due and untried; never raises (but
        CancelledError). True when this process wrote the step's sample."""
        if self.next_try_ms(now_ms) > now_ms:
            return False
        self._tried = step_of(now_ms, self.step_s)
        try:
            wrote, last = await _record(self.broker, now_ms, self.worker_ttl_ms, self.step_s)
        except Exception as exc:
            self._failures += 1
            backoff_steps = min(2 ** (self._failures - 1), MAX_BACKOFF_STEPS)
            self._not_before = now_ms + backoff_steps * self.step_ms
            if self._failures == 1:  # once per run of failures: an outage must not flood the logs
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, BackendUnavailable):
                    log.warning("metrics history: redis unreachable; trying again with backoff", error=error)
                else:
                    log.exception("metrics history: cannot record a sample; trying again with backoff",
                                  error=error)  # fmt: skip
            return False
        if self._failures:
            log.info("metrics history: recording again", failed_tries=self._failures)
            self._failures = 0
            self._not_before = 0
        if last is not None and last > now_ms + CLOCK_SKEW_MS:
            self._clock_ahead(last - now_ms, now_ms)
        return wrote

    def _clock_ahead(self, ahead_ms: int, now_ms: int) -> None:
        if self._skew_warned_ms is not None and now_ms - self._skew_warned_ms < WARN_AGAIN_MS:
            return
        self._skew_warned_ms = now_ms
        log.warning(
            "metrics history: a process whose clock is ahead wrote it; this process cannot add "
            "to it until its clock gets there: keep the clocks in sync (NTP)",
            ahead_s=round(ahead_ms / 1000),
        )


async def run(broker: Broker, worker_ttl_ms: int, step_s: float = STEP_S) -> None:
    """Record the history with the other processes until cancelled (see ``Sampler``)."""
    sampler = Sampler(broker, worker_ttl_ms, step_s)
    while True:
        now = _now_ms()
        wait_ms = sampler.next_try_ms(now) - now
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
            continue
        await sampler.tick(now)


def start(broker: Broker, settings: Settings) -> asyncio.Task[None]:
    """``run`` as a task of this process (an API's lifespan, a worker process); cancel it
    (eventstream.tasks.cancel_and_wait) to stop."""
    return asyncio.create_task(run(broker, metrics.worker_ttl_ms(settings)), name=TASK_NAME)
