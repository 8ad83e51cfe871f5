"""Every metric, declared once. Counters live in Redis (changed inside the same
script as the transition they count), so the figures are exact across processes.

Prometheus text (``render_prometheus``) and the JSON summary (``summary``) are two
views of the same snapshot.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from eventstream.broker import Broker, merge_snapshots
from eventstream.settings import Settings

# Redis counter field -> (JSON name, help)
COUNTERS: dict[str, tuple[str, str]] = {
    "received": ("received", "Events accepted (duplicates and rejected requests excluded)."),
    "processed": ("processed", "Events whose handler succeeded and whose completion was recorded."),
    "failed": ("failed", "Handler attempts that failed (raised or timed out)."),
    "retried": ("retried", "Failed attempts scheduled for another try."),
    "dead_lettered": ("deadLettered", "Events moved to the dead-letter queue."),
    "duplicates": ("duplicates", "Posts answered as duplicates of an earlier event."),
    "reclaimed": ("reclaimed", "Deliveries taken over from a worker whose lease expired."),
    "rejected_completions": (
        "rejectedCompletions",
        "Outcomes refused because the worker no longer owned the event (fencing).",
    ),
    "replayed": ("replayed", "Dead events sent back to the queue."),
    "deleted": ("deleted", "Dead events deleted from the dead-letter queue."),
    "redelivered_skipped": (
        "redeliveredSkipped",
        "Redelivered events found already processed and acknowledged without running again.",
    ),
    # JSON names end in Total: "parked" is the gauge of the events parked now
    "parked": (
        "parkedTotal",
        "Events parked behind earlier events of their ordering key (ingest and replay).",
    ),
    "released": ("releasedTotal", "Parked events let into the stream once their ordering key had room."),
    "emitted": ("emitted", "Follow-up events recorded with their parents' completions (Event.emit)."),
}

GAUGES: dict[str, tuple[str, str]] = {
    "queued": ("queued", "Events in the stream waiting for a worker."),
    "pending": ("pending", "Events delivered to a worker and not yet settled (in flight)."),
    "scheduled": ("scheduled", "Events waiting for a retry."),
    "dlq": ("dlq", "Events in the dead-letter queue."),
    "lag": ("lag", "Entries in the stream not yet delivered to the consumer group."),
    "workers": ("workers", "Workers whose heartbeat is recent."),
    "outbox": (
        "outbox",
        "Follow-up events recorded with their parents' completions, waiting to be relayed to their "
        "own partition (several partitions only).",
    ),
}

# The ordering gauges: snapshot field -> (metric, JSON name, help). Their own names, as
# eventstream_parked is the counter's; the wait is in seconds here and in ms in the JSON.
ORDERING_GAUGES: dict[str, tuple[str, str, str]] = {
    "parked": (
        "eventstream_ordering_parked",
        "parked",
        "Events parked behind earlier events of their ordering key, waiting to be released.",
    ),
    "busy_keys": (
        "eventstream_ordering_busy_keys",
        "busyKeys",
        "Ordering keys with events in progress (queued, in flight or waiting for a retry).",
    ),
    "oldest_parked_ms": (
        "eventstream_ordering_oldest_wait_seconds",
        "oldestParkedMs",
        "How long the event parked longest has waited (0: none is parked).",
    ),
}

# Upper bounds (seconds) of the histogram buckets; +Inf is implicit.
BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

HISTOGRAMS: dict[str, tuple[str, str]] = {
    "handler": ("eventstream_handler_duration_seconds", "Time one successful handler call took."),
    "e2e": ("eventstream_end_to_end_seconds", "Time from acceptance to recorded processing."),
}


def bucket_index(seconds: float) -> int:
    return bisect.bisect_left(BUCKETS_S, seconds)


class HistogramBatch:
    """Observations of one worker batch, folded into field increments for complete.lua."""

    def __init__(self) -> None:
        # per histogram: one count per bucket (+Inf last), then the sum in microseconds
        self._h: dict[str, list[int]] = {}

    def observe(self, name: str, seconds: float) -> None:
        h = self._h.get(name)
        if h is None:
            h = self._h[name] = [0] * (len(BUCKETS_S) + 2)
        h[bisect.bisect_left(BUCKETS_S, seconds)] += 1
        h[-1] += int(seconds * 1_000_000)

    def fields(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for name, h in self._h.items():
            out += [(f"{name}:{i}", n) for i, n in enumerate(h[:-1]) if n]
            out.append((f"{name}:count", sum(h[:-1])))
            out.append((f"{name}:sum_us", h[-1]))
        return out


# Gauges also shown per partition (a label) when a deployment has several.
PARTITION_GAUGES = ("queued", "pending", "scheduled", "dlq", "lag", "parked")


@dataclass(frozen=True, slots=True)
class Snapshot:
    counters: dict[str, int]
    gauges: dict[str, int]
    histograms: dict[str, int]
    partitions: tuple[dict[str, int], ...] = ()  # each partition's gauges, when several


def worker_ttl_ms(settings: Settings) -> int:
    """How recent a heartbeat must be for its worker to count as live (the ``workers`` gauge)."""
    return int(max(settings.visibility_timeout, 10) * 1000)


async def snapshot(broker: Broker, now_ms: int, worker_ttl_ms: int) -> Snapshot:
    """Everything /metrics shows: each partition read at one instant (so each, and their
    sum, obeys the conservation law), the deployment's figures summed over them."""
    parts = await broker.snapshots(now_ms, worker_ttl_ms)
    counters, gauges, histograms = merge_snapshots(parts)
    return Snapshot(counters, gauges, histograms, tuple(g for _, g, _ in parts) if len(parts) > 1 else ())


def summary(snap: Snapshot) -> dict[str, int]:
    out = {json_name: snap.counters.get(field, 0) for field, (json_name, _) in COUNTERS.items()}
    out.update({json_name: snap.gauges.get(f, 0) for f, (json_name, _) in GAUGES.items()})
    out.update({json_name: snap.gauges.get(f, 0) for f, (_, json_name, _) in ORDERING_GAUGES.items()})
    return out


class _Static(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _families(snap: Snapshot) -> Iterator[Metric]:
    for field, (_, help_text) in COUNTERS.items():
        c = CounterMetricFamily(f"eventstream_{field}", help_text)
        c.add_metric([], snap.counters.get(field, 0))
        yield c
    for field, (_, help_text) in GAUGES.items():
        g = GaugeMetricFamily(f"eventstream_{field}", help_text)
        g.add_metric([], snap.gauges.get(field, 0))
        yield g
    for field, (metric, _, help_text) in ORDERING_GAUGES.items():
        g = GaugeMetricFamily(metric, help_text)
        value = snap.gauges.get(field, 0)
        g.add_metric([], value / 1000 if field.endswith("_ms") else value)
        yield g
    if snap.partitions:
        for field in PARTITION_GAUGES:
            help_text = GAUGES[field][1] if field in GAUGES else ORDERING_GAUGES[field][2]
            g = GaugeMetricFamily(
                f"eventstream_partition_{field}", f"{help_text} Per partition.", labels=["partition"]
            )
            for index, gauges in enumerate(snap.partitions):
                g.add_metric([str(index)], gauges.get(field, 0))
            yield g
    for name, (metric, help_text) in HISTOGRAMS.items():
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for i, bound in enumerate(BUCKETS_S):
            cumulative += snap.histograms.get(f"{name}:{i}", 0)
            buckets.append((repr(bound), cumulative))
        cumulative += snap.histograms.get(f"{name}:{len(BUCKETS_S)}", 0)
        buckets.append(("+Inf", cumulative))
        total_s = snap.histograms.get(f"{name}:sum_us", 0) / 1_000_000
        h = HistogramMetricFamily(metric, help_text)
        h.add_metric([], buckets, total_s)
        yield h


REFUSED = (
    "eventstream_ingest_refused",
    "Ingest requests (POST /events and /events/batch) this API process answered with an error, "
    "by status: 4xx refused the request, 503 shed it or could not reach Redis. Counted per "
    "process since it started, unlike the deployment-wide metrics: sum it over the processes.",
)


def render_prometheus(snap: Snapshot, refused: Mapping[int, int] | None = None) -> bytes:
    """The Prometheus text of ``snap``, and of this API process's ``refused`` ingest
    requests by status when given."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(_families(snap)))
    if refused is not None:
        c = CounterMetricFamily(REFUSED[0], REFUSED[1], labels=["status"])
        for status, count in sorted(refused.items()):
            c.add_metric([str(status)], count)
        registry.register(_Static([c]))
    return generate_latest(registry)
