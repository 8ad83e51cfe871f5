"""The operator's pages: the overview and its live tiles, the scheduled retries, the
workers and the partitions. Each reads a bounded amount (the metrics snapshot and the
broker's views: ranges with limits), whatever the deployment holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from eventstream.api.deps import services
from eventstream.api.ui.access import Visit
from eventstream.api.ui.chart import draw
from eventstream.api.ui.render import page
from eventstream.broker.views import Beat, Retrying, cursor_text, parse_cursor
from eventstream.errors import ValidationError
from eventstream.event import decode_envelope
from eventstream.ops import history, metrics

RETRIES_PAGE = 100
WORKERS_SHOWN = 200

# The overview's tiles: (label, figure); figures from ``figures`` below.
TILES = (
    ("Queued", "queued"),
    ("In flight", "pending"),
    ("Scheduled retries", "scheduled"),
    ("Dead letters", "dlq"),
    ("Oldest waiting", "oldestWaitingMs"),
    ("Live workers", "workers"),
    ("Processed", "processed"),
    ("Failed attempts", "failed"),
    ("Dead-lettered", "deadLettered"),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def worker_ttl_ms(request: Request) -> int:
    """How recent a heartbeat must be for its worker to count as live (the ``workers`` gauge's rule)."""
    return metrics.worker_ttl_ms(services(request).settings)


async def snapshot(request: Request) -> metrics.Snapshot:
    return await metrics.snapshot(services(request).broker, _now_ms(), worker_ttl_ms(request))


async def figures(request: Request) -> dict[str, int]:
    """The deployment's metrics now, as /metrics answers them in JSON, and how long the
    oldest event not yet delivered to a worker has waited (``oldestWaitingMs``, as the
    metrics history calls it)."""
    out = metrics.summary(await snapshot(request))
    out["oldestWaitingMs"] = await services(request).broker.oldest_waiting_ms(_now_ms())
    return out


def duration(ms: int) -> str:
    """A duration as a person reads it: "850 ms", "42 s", "3 min 20 s", "2 h 5 min", "3 d 4 h"."""
    if ms < 1000:
        return f"{max(ms, 0)} ms"
    s = ms // 1000
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


def clock(ms: int) -> str:
    """A moment as UTC text (to the second)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- overview ----------------------------------------------------------------------


def _tiles(f: dict[str, int]) -> list[tuple[str, str, str]]:
    """(label, figure name, the value shown) of each tile."""
    return [
        (label, name, duration(f[name]) if name.endswith("Ms") else f"{f[name]:,}") for label, name in TILES
    ]


async def overview(request: Request, visit: Visit) -> Response:
    tiles = _tiles(await figures(request))
    return page(request, visit, "overview.html", nav="overview", tiles=tiles, **await chart_context(request))


async def chart(request: Request, visit: Visit) -> Response:
    """The overview's chart alone (htmx polls it): the history's rates, drawn again."""
    return page(request, visit, "chart.html", **await chart_context(request))


async def chart_context(request: Request) -> dict[str, Any]:
    """What chart.html needs: the last DEFAULT_WINDOW_S of the history, drawn."""
    window_s = history.DEFAULT_WINDOW_S
    now = _now_ms()
    read = await history.read(services(request).broker, window_s, now_ms=now)
    drawn = draw([(p.t_ms, p.rates) for p in read if p.rates is not None], now, window_s, history.STEP_S)
    return {
        "chart": drawn,
        "window_min": window_s // 60,
        "step_s": history.STEP_S,
        "refresh_s": history.STEP_S,
    }


async def overview_figures(request: Request, visit: Visit) -> Response:
    """The overview's tiles alone: htmx polls this and swaps them in place."""
    return page(request, visit, "overview_tiles.html", tiles=_tiles(await figures(request)))


# ---- retries -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryRow:
    event_id: str
    type: str
    partition: int
    attempts: int
    due: str  # UTC
    when: str  # "in 3 s" or "overdue by 2 s"
    overdue: bool
    first_line: str  # of the failure ("" when none was recorded)
    error: str  # the whole failure


def _retry_row(r: Retrying, now_ms: int) -> RetryRow:
    try:
        type_ = decode_envelope(r.envelope).type if r.envelope else ""
    except (msgspec.DecodeError, msgspec.ValidationError):
        type_ = ""
    wait = r.due_ms - now_ms
    error = r.error or ""
    return RetryRow(
        r.event_id,
        type_,
        r.partition,
        r.attempts,
        clock(r.due_ms),
        f"in {duration(wait)}" if wait > 0 else f"overdue by {duration(-wait)}",
        wait <= 0,
        error.split("\n", 1)[0],
        error,
    )


async def retries(request: Request, visit: Visit) -> Response:
    """The scheduled retries, soonest first, ``RETRIES_PAGE`` at a time (keyset paging
    by due time: ``?after=<cursor>``)."""
    raw = request.query_params.get("after") or None
    after = None
    if raw is not None:
        after = parse_cursor(raw)
        if after is None:
            raise ValidationError(f"after={raw[:80]!r} is not a cursor of this page: follow its 'Later' link")
    svc = services(request)
    found = await svc.broker.views.retries(after, RETRIES_PAGE + 1)
    now = _now_ms()
    shown = found[:RETRIES_PAGE]
    more = len(found) > RETRIES_PAGE
    return page(
        request,
        visit,
        "retries.html",
        nav="retries",
        rows=[_retry_row(r, now) for r in shown],
        later=cursor_text(shown[-1].cursor) if more else None,
        paged=after is not None,
        scheduled=(await snapshot(request)).gauges.get("scheduled", 0),
        limit=RETRIES_PAGE,
    )


# ---- workers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRow:
    name: str
    host: str
    pid: str
    in_flight: int
    last_beat: str  # UTC
    age: str
    stale: bool
    overdue: dict[str, Any] | None  # count, eventId, age, allowed (texts), when reported


def split_consumer(name: str) -> tuple[str, str]:
    """(host, pid) of a consumer named as workers name themselves ("<host>-<pid>-<6 hex>");
    ("", "") for any other name."""
    host, pid, tag = (["", "", "", *name.rsplit("-", 2)])[-3:]
    if host and pid.isdigit() and len(tag) == 6 and all(c in "0123456789abcdef" for c in tag):
        return host, pid
    return "", ""


def _overdue(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        report = msgspec.json.decode(raw)
        return {
            "count": int(report["count"]),
            "eventId": str(report["eventId"]),
            "age": duration(int(report["ageMs"])),
            "allowed": duration(int(report["allowedMs"])),
        }
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return None


def _worker_row(b: Beat, now_ms: int, ttl_ms: int) -> WorkerRow:
    host, pid = split_consumer(b.consumer)
    return WorkerRow(
        b.consumer,
        host,
        pid,
        b.in_flight,
        clock(b.last_beat_ms),
        duration(max(now_ms - b.last_beat_ms, 0)),
        b.last_beat_ms < now_ms - ttl_ms,
        _overdue(b.overdue),
    )


async def workers(request: Request, visit: Visit) -> Response:
    """Every worker by its heartbeat, the latest first: live, or stale (no beat within
    the worker TTL, the ``workers`` gauge's rule)."""
    beats, total = await services(request).broker.views.workers(WORKERS_SHOWN)
    now, ttl = _now_ms(), worker_ttl_ms(request)
    rows = [_worker_row(b, now, ttl) for b in beats]
    return page(
        request,
        visit,
        "workers.html",
        nav="workers",
        rows=rows,
        live=sum(not r.stale for r in rows),
        total=total,
        ttl=duration(ttl),
    )


# ---- partitions --------------------------------------------------------------------


async def partitions(request: Request, visit: Visit) -> Response:
    """Each partition's gauges (metrics.PARTITION_GAUGES) and the node that serves it."""
    broker = services(request).broker
    snap = await snapshot(request)
    nodes = broker.views.nodes()
    rows = [(i, gauges, nodes[i]) for i, gauges in enumerate(snap.partitions)]
    return page(
        request,
        visit,
        "partitions.html",
        nav="partitions",
        rows=rows,
        gauges=[
            ("Queued", "queued"),
            ("In flight", "pending"),
            ("Scheduled", "scheduled"),
            ("DLQ", "dlq"),
            ("Lag", "lag"),
            ("Parked", "parked"),
        ],
        cluster=any(n is not None for n in nodes),
    )
