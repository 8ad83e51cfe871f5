"""What ordering keys cost (`python -m benchmarks --ordering`), each figure beside the
same workload without keys, in the same run, on the same server:

- drain: N events (100,000) pre-queued over K ordering keys (1,000; the keys interleaved,
  N / K events each), against the same N events with no key, each drained by one
  `eventstream worker --burst` with the default settings (the no-op app, store on), as
  the suite's drain. With key_concurrency 1 a key has one event in the stream at a time,
  so at most K events are in flight or readable at once; the rest wait parked.
- a busy key beside unkeyed events: end-to-end latency of unkeyed events offered over
  HTTP at a fixed rate (as the suite's latency benchmark), through one API and one
  worker, alone and then beside one ordering key with a backlog of parked events whose
  handler takes 20 ms, in the same partition (the deployment has one unless
  --partitions says otherwise).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from contextlib import closing
from typing import Any

from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, drain, measure_latency, prequeue

APP = "benchmarks.ordering_app:app"
SLOW_S = 0.02


def bench_drains(run: Run, events: int, keys: int, progress: Progress) -> None:
    plain = drain(run, "order-plain", events, progress)
    keyed = drain(run, "order-keyed", events, progress, keys=keys)
    settings = run.settings("order-keyed")
    run.figures["ordering_drain"] = {
        "events": events,
        "keys": keys,
        "worker": {"concurrency": settings.concurrency, "batch_size": settings.batch_size},
        "plain": plain,
        "keyed": keyed,
        "keyed_share": round(keyed["events_per_s"] / max(plain["events_per_s"], 1), 3),
    }


def busy_latency(run: Run, rate: float, seconds: float, progress: Progress) -> None:
    """Unkeyed events' latency alone, then beside a busy key: a backlog long enough to
    keep it busy until the end (checked: how many of its events are still parked)."""
    alone = measure_latency(run, "order-alone", rate, seconds, progress, app=APP)
    name = "order-busy"
    backlog = math.ceil((seconds + 15) / SLOW_S)
    asyncio.run(prequeue(run.settings(name), backlog, keys=1, event_type="SLOW", key_name="busy"))
    busy = measure_latency(run, name, rate, seconds, progress, app=APP, BENCH_SLOW_S=str(SLOW_S))
    with Probe(run.settings(name)) as probe:
        parked = probe.counter("parked") - probe.counter("released")
    with closing(sqlite3.connect(run.scratch / name / "events.db")) as conn:
        ran = conn.execute("SELECT count(*) FROM eventstream_events WHERE type = 'SLOW'").fetchone()[0]
    busy["busy_key"] = {
        "handler_ms": SLOW_S * 1000,
        "backlog": backlog,
        "ran": ran,
        "parked_at_end": parked,
    }
    run.figures["ordering_latency"] = {"alone": alone, "busy": busy}


def ordering_table(run: Run) -> Table:
    f = run.figures
    d, lat = f["ordering_drain"], f["ordering_latency"]
    plain, keyed = d["plain"], d["keyed"]
    worker = d["worker"]
    partitions = f"{run.partitions} partition{'s' * (run.partitions > 1)}"
    table = Table(
        title="EventStream ordering keys",
        caption=f"server: {f.get('redis_server', '?')}; one server, {partitions}; worker: the "
        f"defaults (concurrency {worker['concurrency']}, batch {worker['batch_size']}), store on",
    )
    table.add_column("benchmark")
    table.add_column("without ordering keys", justify="right")
    table.add_column("with ordering keys", justify="right")
    table.add_column("with / without", justify="right")
    table.add_row(
        f"drain of {d['events']:,} events, 1 worker process, no-op handler",
        f"no key: {plain['events_per_s']:,} events/s",
        f"{d['keys']:,} keys: {keyed['events_per_s']:,} events/s",
        f"{d['keyed_share']:.0%} (target ≥ 60%)",
    )
    plain_us, keyed_us = plain["redis"]["cpu_us_per_event"], keyed["redis"]["cpu_us_per_event"]
    table.add_row(
        "drain: Redis CPU per event",
        f"{plain_us} µs",
        f"{keyed_us} µs",
        f"{keyed_us / plain_us:.2f}x" if plain_us else "",
    )
    plain_q, keyed_q = plain["queueing_redis_us_per_event"], keyed["queueing_redis_us_per_event"]
    table.add_row(
        "queueing them (1,000 per ingest call, not timed): Redis CPU per event",
        f"{plain_q} µs",
        f"{keyed_q} µs",
        f"{keyed_q / plain_q:.2f}x" if plain_q else "",
    )
    plain_cpu, keyed_cpu = plain["worker_cpu_us_per_event"], keyed["worker_cpu_us_per_event"]
    table.add_row(
        "drain: worker CPU per event",
        f"{plain_cpu} µs",
        f"{keyed_cpu} µs",
        f"{keyed_cpu / plain_cpu:.2f}x" if plain_cpu else "",
    )
    alone, busy = lat["alone"], lat["busy"]
    key = busy["busy_key"]

    def ms(x: dict[str, Any]) -> str:
        return f"{x['p50_ms']:g} / {x['p99_ms']:g} / {x['max_ms']:g} ms"

    table.add_row(
        f"unkeyed events, end-to-end at {alone['offered_per_s']:g}/s, p50 / p99 / max",
        f"alone: {ms(alone)}",
        f"beside a busy key: {ms(busy)}",
        f"p50 {busy['p50_ms'] - alone['p50_ms']:+g}, p99 {busy['p99_ms'] - alone['p99_ms']:+g} ms",
    )
    where = "same partition" if run.partitions == 1 else f"in 1 of the {run.partitions} partitions"
    table.add_row(
        f"the busy key, {where}",
        "",
        f"{key['handler_ms']:g} ms handler, {key['ran']:,} ran, {key['parked_at_end']:,} still parked",
        "",
    )
    return table
