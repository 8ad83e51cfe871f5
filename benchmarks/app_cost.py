"""The API's own CPU per ingest request, without an HTTP server or a load generator
(`python -m benchmarks --app-cost`).

POST /events, then POST /events/batch with 100 events, go through the real app
(create_app, inside its lifespan, on the run's private server) called as an ASGI
application in this process, 32 requests at a time; then the same single-event body
through the bare Starlette route of benchmarks/bare_app.py, driven the same way. The
figure is this process's CPU (user + system, every thread) per request after a
warm-up, so it leaves out what uvicorn and wrk cost and what Redis spends in its own
process, and it varies less than the HTTP figures on a shared machine: the way to
compare two versions of the API code is to run this on each.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from rich.progress import Progress
from rich.table import Table
from starlette.types import ASGIApp, Message

from benchmarks.harness import Run

CONCURRENCY = 32
ONE = json.dumps({"type": "BENCH", "payload": {"user": "khushi", "n": 1}}).encode()
BATCH = json.dumps({"events": [{"type": "BENCH", "payload": {"n": i}} for i in range(100)]}).encode()


async def drive(app: ASGIApp, path: str, body: bytes, requests: int) -> dict[str, Any]:
    """``requests`` POSTs of ``body`` to ``path``, CONCURRENCY at a time, after as many
    for a warm-up: this process's CPU µs per request and the requests per second."""
    statuses: Counter[int] = Counter()
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] += 1

    async def lane(n: int) -> None:
        for _ in range(n):
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                     "query_string": b"", "headers": list(headers), "client": ("127.0.0.1", 50000),
                     "server": ("127.0.0.1", 8000)}  # fmt: skip
            await app(scope, receive, send)

    per_lane = max(1, requests // CONCURRENCY)
    await asyncio.gather(*(lane(per_lane) for _ in range(CONCURRENCY)))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(per_lane) for _ in range(CONCURRENCY)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    refused = {s: n for s, n in statuses.items() if s >= 300}
    if refused:
        raise RuntimeError(f"{path}: answers other than 2xx: {refused}")
    n = per_lane * CONCURRENCY
    return {"requests": n, "cpu_us_per_request": round(cpu * 1e6 / n, 1), "requests_per_s": round(n / wall)}


async def measure(run: Run, requests: int) -> dict[str, Any]:
    from benchmarks.bare_app import app as bare
    from eventstream.api import create_app

    app = create_app(run.settings("appcost"), loopback=True)
    async with app.router.lifespan_context(app):
        single = await drive(app, "/events", ONE, requests)
        batch = await drive(app, "/events/batch", BATCH, max(CONCURRENCY, requests // 20))
    return {"single": single, "batch": batch, "bare": await drive(bare, "/events", ONE, requests)}


def bench_app_cost(run: Run, requests: int, progress: Progress) -> None:
    task = progress.add_task("app cost: ingest through the ASGI app in process", total=1)
    run.figures["app_cost"] = asyncio.run(measure(run, requests))
    progress.advance(task)


def app_cost_table(run: Run) -> Table:
    f = run.figures["app_cost"]
    table = Table(
        title="The API's own CPU per ingest request (the app called over ASGI in process)",
        caption=f"{CONCURRENCY} requests at a time, after a warm-up; server: "
        f"{run.figures.get('redis_server', '?')}"
        + (f" with {run.figures['server_args']}" if run.figures.get("server_args") else ""),
    )
    table.add_column("request")
    table.add_column("requests", justify="right")
    table.add_column("CPU per request", justify="right")
    table.add_column("CPU per event", justify="right")
    table.add_column("requests/s", justify="right")
    for key, what, events in (("bare", "bare Starlette route, one event", 1),
                              ("single", "POST /events, one event", 1),
                              ("batch", "POST /events/batch, 100 events", 100)):  # fmt: skip
        r = f[key]
        table.add_row(what, f"{r['requests']:,}", f"{r['cpu_us_per_request']:,} µs",
                      f"{r['cpu_us_per_request'] / events:,.1f} µs", f"{r['requests_per_s']:,}")  # fmt: skip
    return table
