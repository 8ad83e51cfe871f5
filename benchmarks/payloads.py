"""What the payload's size costs (`python -m benchmarks --payloads`): the drain and the
batch ingest at payloads of 100 B, 1 KiB, 10 KiB and 100 KiB, in events/s and MB/s of
payload, with the CPU per event and per KiB of the worker (drain) and of Redis, so that
a step where the cost per byte jumps shows.

A payload is ``{"n": n, "data": [...]}``, its list of strings of at most 1,000
characters (a payload's strings are bounded, EVENTSTREAM_MAX_STRING_LENGTH) filled to
the size, so the JSON of the payload is that many bytes. The drain is the suite's (one
``eventstream worker --burst``, no-op handler, SQLite store) over as many events as fit
in ``DRAIN_BYTES`` of payload (at most ``--events``, at least 1,000); the batch ingest is
wrk posting 100 events per request (fewer for big payloads: at most 1,000,000 bytes of
payload, as the API's default body limit of 1 MiB allows) for ``--seconds`` to one API
process. The server is emptied after each size.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, api_process, drain
from benchmarks.httpload import busy_s, load
from benchmarks.nodes import usage, work
from eventstream.broker import connect

SIZES = (100, 1024, 10 * 1024, 100 * 1024)
DRAIN_BYTES = 200_000_000  # payload bytes one size's drain queues at most
BODY_BYTES = 1_000_000  # payload bytes per batch request at most (the API's body limit is 1 MiB)


def per_request(size: int) -> int:
    """Events per batch request: 100, or fewer when 100 would not fit in one body."""
    return max(1, min(100, BODY_BYTES // size))


def payload_of(size: int) -> Any:
    """Event n's payload: ``size`` bytes of compact JSON (for any n whose digits fit)."""
    base = len(json.dumps({"n": 0, "data": []}, separators=(",", ":")))

    def make(n: int) -> dict[str, Any]:
        left = size - base - (len(str(n)) - 1)  # room inside the list's brackets
        data: list[str] = []
        while left >= 2 + bool(data):
            left -= bool(data)  # the comma before every string but the first
            chunk = min(1000, left - 2)  # a string costs its two quotes
            data.append("x" * chunk)
            left -= chunk + 2
        return {"n": n, "data": data}

    return make


async def _flush(url: str) -> None:
    redis = await connect(url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()


def bench_payloads(run: Run, events: int, seconds: float, progress: Progress) -> None:
    rows = []
    for size in SIZES:
        make = payload_of(size)
        real = len(json.dumps(make(1), separators=(",", ":")))
        budget, least = (DRAIN_BYTES, 1000) if not run.quick else (2_000_000, 50)
        n = max(least, min(events, budget // size))
        name = f"payload{size}"
        drained = drain(run, name, n, progress, payload=make)
        asyncio.run(_flush(run.url))
        task = progress.add_task(f"{name}: batch ingest", total=1)
        count = per_request(size)
        body = json.dumps({"events": [{"type": "BENCH", "payload": make(i)} for i in range(count)]})
        batch_name = f"batch{size}"
        lifted = {"EVENTSTREAM_MAX_BACKLOG": "0"}  # the events of a 100 B run pass the default bound
        with api_process(run, batch_name, **lifted) as base, Probe(run.settings(batch_name)) as probe:
            before = usage(run.nodes)
            figures = load(run, f"{base}/events/batch", body, seconds)
            received = probe.counter("received")
            batch_redis = work(run.nodes, before, received, {})
        asyncio.run(_flush(run.url))
        progress.advance(task)
        batch_rate = received / busy_s(figures, seconds)  # accepted events only
        kib = real / 1024
        rows.append(
            {
                "payload_bytes": real,
                "drain_events": n,
                "drain_events_per_s": drained["events_per_s"],
                "drain_mb_per_s": round(drained["events_per_s"] * real / 1e6, 2),
                "drain_worker_cpu_us_per_event": drained["worker_cpu_us_per_event"],
                "drain_worker_cpu_us_per_kib": round(drained["worker_cpu_us_per_event"] / kib, 2),
                "drain_redis_us_per_event": drained["redis"]["cpu_us_per_event"],
                "drain_redis_us_per_kib": round(drained["redis"]["cpu_us_per_event"] / kib, 2),
                "batch_per_request": count,
                "batch_events_per_s": round(batch_rate),
                "batch_mb_per_s": round(batch_rate * real / 1e6, 2),
                "batch_redis_us_per_event": batch_redis["cpu_us_per_event"],
                "batch_redis_us_per_kib": round(batch_redis["cpu_us_per_event"] / kib, 2),
                "batch_errors": int(figures.get("errors", 0)),
                "batch_received": received,
            }
        )
    run.figures["payloads"] = rows


def payloads_table(run: Run) -> Table:
    table = Table(
        title="EventStream by payload size",
        caption=f"server: {run.figures.get('redis_server', '?')}; CPU per KiB of payload",
    )
    for column in ("payload", "drain", "MB/s", "worker µs/event", "worker µs/KiB", "Redis µs/KiB",
                   "batch ingest", "MB/s", "Redis µs/event", "Redis µs/KiB"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in run.figures["payloads"]:
        table.add_row(
            f"{r['payload_bytes']:,} B",
            f"{r['drain_events_per_s']:,}/s",
            f"{r['drain_mb_per_s']:g}",
            f"{r['drain_worker_cpu_us_per_event']:g}",
            f"{r['drain_worker_cpu_us_per_kib']:g}",
            f"{r['drain_redis_us_per_kib']:g}",
            f"{r['batch_events_per_s']:,}/s",
            f"{r['batch_mb_per_s']:g}",
            f"{r['batch_redis_us_per_event']:g}",
            f"{r['batch_redis_us_per_kib']:g}",
        )
    return table
