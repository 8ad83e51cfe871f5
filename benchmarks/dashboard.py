"""How fast the dashboard answers with big data (`python -m benchmarks --dashboard`):
every page timed against one real API process, with ``--rows`` processed events in the
store (default 1,000,000) and ``--dead`` events in the dead-letter queue (default
100,000); the target: each page answers in under 200 ms.

The data is made by the product's own paths: the store's rows by ``SqlStore.record``
(the worker's write), spread over the last six days across ten types; the dead events
by a real ``eventstream worker`` running benchmarks/dashboard_app.py, which raises
PermanentError for each (three kinds of reason, so a reason filter matches a third);
200 more events wait a day for their retry. The worker keeps running while the pages
are timed (the Workers page has one to show).

Each page is fetched once to warm up, then ``--samples`` times (default 20) one after
the other over one keep-alive connection; the table shows the median, the 95th
percentile and the slowest, and the page's status. A filtered "replay all" confirmation
counts in slices (at most 0.1 s per request): its whole count, from the first request
through every "count on" request htmx would send, is timed as well.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, api_process, percentile, prequeue, spawn, stop
from eventstream.backends import open_backends
from eventstream.store import ProcessedRow

NAME = "dashboard"
TYPES = tuple(f"TYPE_{i}" for i in range(10))
RETRYING = 200
BATCH = 10_000
LIMIT_MS = 200.0


async def fill_store(run: Run, rows: int, progress: Progress) -> None:
    """``rows`` processed events through the store's own write, oldest first."""
    task = progress.add_task(f"{NAME}: store rows", total=rows)
    now = int(time.time() * 1000)
    span = 6 * 86_400_000  # inside the default retention (7 days): the worker keeps them
    async with open_backends(run.settings(NAME)) as b:
        for start in range(0, rows, BATCH):
            batch = []
            for n in range(start, min(rows, start + BATCH)):
                at = now - span + span * n // rows
                payload = json.dumps({"order": n, "customer": f"c-{n % 9973}", "lines": [n % 7, n % 11]})
                batch.append(
                    ProcessedRow(
                        str(uuid.UUID(int=(at << 80) | (0x7 << 76) | n)),  # a UUIDv7 shape, ordered by time
                        TYPES[n % len(TYPES)],
                        payload,
                        "bench",
                        None,
                        None,
                        None,
                        None,
                        1,
                        at - 5,
                        at,
                    )
                )
            await b.store.record(batch)
            progress.update(task, advance=len(batch))


def fill_queues(run: Run, dead: int, progress: Progress) -> Any:
    """``dead`` events dead-lettered and RETRYING scheduled by a real worker, left running."""
    task = progress.add_task(f"{NAME}: dead letters", total=dead + RETRYING)
    settings = run.settings(NAME)
    asyncio.run(prequeue(settings, dead, event_type="DOOMED"))
    asyncio.run(prequeue(settings, RETRYING, event_type="RETRY"))
    worker = spawn(
        ["worker", "benchmarks.dashboard_app:app"], run.env(NAME), run.scratch / f"{NAME}-worker.log"
    )
    probe = Probe(settings)
    deadline = time.monotonic() + 600
    while (done := probe.counter("dead_lettered") + probe.counter("retried")) < dead + RETRYING:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not fill the DLQ; see {run.scratch / f'{NAME}-worker.log'}")
        progress.update(task, completed=done)
        time.sleep(0.2)
    progress.update(task, completed=dead + RETRYING)
    probe.close()
    return worker


def pages(base: str) -> list[tuple[str, str]]:
    """(label, path) of every page, with ids and cursors read from the JSON API."""
    with httpx.Client(base_url=base, timeout=30) as c:
        newest = c.get("/events", params={"limit": 50}).json()
        dead = c.get("/failed-events", params={"limit": 1}).json()["items"][0]["id"]
    processed = newest["items"][0]["id"]
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3 * 86_400))
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 2 * 86_400))
    return [
        ("overview", "/ui"),
        ("overview: live figures", "/ui/overview/figures"),
        ("overview: chart", "/ui/overview/chart"),
        ("events, newest", "/ui/events"),
        ("events, second page", f"/ui/events?cursor={newest['nextCursor']}"),
        ("events of one type", "/ui/events?type=TYPE_3"),
        ("events in a day, one type", f"/ui/events?type=TYPE_3&since={since}&until={until}"),
        ("find by id (a redirect to the event)", f"/ui/events/find?id={processed}"),
        ("a processed event", f"/ui/events/{processed}"),
        ("a dead event", f"/ui/events/{dead}"),
        ("dead letters, newest", "/ui/dlq"),
        ("dead letters of one type", "/ui/dlq?type=DOOMED"),
        ("dead letters, reason text", "/ui/dlq?q=timeout"),
        ("dead letters, reason matching none", "/ui/dlq?q=no-such-reason"),
        ("confirm replaying every dead letter (the DLQ's length)", "/ui/dlq/confirm?do=replay"),
        *[
            (f"confirm replaying {what} (a count's first slice)", f"/ui/dlq/confirm?do=replay&{query}")
            for what, query in COUNTS
        ],
        ("retries", "/ui/retries"),
        ("workers", "/ui/workers"),
    ]


COUNTS = [("those of one type", "type=DOOMED"), ("those of one reason", "q=timeout")]
_COUNT_ON = re.compile(r'hx-get="([^"]+)" hx-trigger="load"')


def time_counts(base: str, samples: int) -> list[dict[str, Any]]:
    """How long the confirmation page takes to show a filter's whole count: its first
    request, then each "count on" request htmx sends, to the end."""
    out = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for what, query in COUNTS:
            ms, requests, matched = [], 0, ""
            for _ in range(samples):
                t = time.perf_counter()
                r = c.get(f"/ui/dlq/confirm?do=replay&{query}")
                requests = 1
                while m := _COUNT_ON.search(r.text):
                    r = c.get(html.unescape(m.group(1)))
                    requests += 1
                ms.append((time.perf_counter() - t) * 1000)
                found = re.search(r"<strong>([0-9,]+)</strong> dead events? match", r.text)
                matched = found.group(1) if found else "?"
            out.append(
                {
                    "count": what,
                    "matched": matched,
                    "requests": requests,
                    "median_ms": round(statistics.median(ms), 1),
                    "max_ms": round(max(ms), 1),
                }
            )
    return out


def time_pages(base: str, samples: int, progress: Progress) -> list[dict[str, Any]]:
    listed = pages(base)
    task = progress.add_task(f"{NAME}: pages", total=len(listed))
    out = []
    with httpx.Client(base_url=base, timeout=30) as c:
        for label, path in listed:
            status = c.get(path).status_code  # warm-up
            ms = []
            for _ in range(samples):
                t = time.perf_counter()
                status = c.get(path).status_code
                ms.append((time.perf_counter() - t) * 1000)
            ms.sort()
            out.append(
                {
                    "page": label,
                    "path": path.split("?")[0],
                    "status": status,
                    "ok": status == (303 if "/find" in path else 200),
                    "median_ms": round(statistics.median(ms), 1),
                    "p95_ms": round(percentile(ms, 0.95), 1),
                    "max_ms": round(ms[-1], 1),
                }
            )
            progress.advance(task)
    return out


def bench_dashboard(run: Run, rows: int, dead: int, samples: int, progress: Progress) -> None:
    asyncio.run(fill_store(run, rows, progress))
    worker = fill_queues(run, dead, progress)
    try:
        with api_process(run, NAME) as base:
            run.figures["dashboard"] = {
                "rows": rows,
                "dead": dead,
                "pages": time_pages(base, samples, progress),
                "counts": time_counts(base, samples),
            }
    finally:
        stop(worker)


def dashboard_table(figures: dict[str, Any], redis_server: str) -> Table:
    d = figures["dashboard"]
    table = Table(
        title=f"Dashboard pages, {d['rows']:,} events in the store and {d['dead']:,} in the DLQ "
        f"(one API process, SQLite store, {redis_server}; target < {LIMIT_MS:.0f} ms)"
    )
    for column in ("page", "status", "median ms", "p95 ms", "max ms"):
        table.add_column(column, justify="left" if column == "page" else "right")
    mark: Callable[[float], str] = lambda v: f"{v}" if v < LIMIT_MS else f"[red]{v}[/red]"  # noqa: E731
    for p in d["pages"]:
        table.add_row(p["page"], str(p["status"]), mark(p["median_ms"]), mark(p["p95_ms"]), mark(p["max_ms"]))
    for n in d.get("counts", []):
        table.add_row(
            f"whole count of {n['count']}: {n['matched']} match, {n['requests']} requests",
            "",
            f"{n['median_ms']}",
            "",
            f"{n['max_ms']}",
        )
    return table
