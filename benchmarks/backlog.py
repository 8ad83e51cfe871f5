"""Whether a long queue slows EventStream down (`python -m benchmarks --backlog`): the
batch ingest and the drain on a server holding ``--backlog`` queued events (default
1,000,000), each beside the same measure on a nearly empty server, in the same run.

1. The batch ingest (wrk, 100 events per request, ``--seconds``, one API process) into
   a deployment with nothing queued.
2. The suite's drain of ``--events`` events (default 100,000) queued alone.
3. ``--backlog`` events queued into a third deployment (no worker running), then the
   same batch ingest into it, then one worker drains its first ``--events`` events and
   is stopped.

Each phase also reports what the server did meanwhile: its CPU per event (the server
process; a fork's child apart) and the share of it spent in the kernel, the appends to
the append-only file it put off because the previous second's fsync had not finished
(INFO's aof_delayed_fsync), the forks it made (an append-only-file rewrite forks) and
its children's CPU, and its memory and append-only file at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis as sync_redis
from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, api_process, drain, prequeue
from benchmarks.httpload import load
from benchmarks.nodes import usage, work

BATCH = json.dumps({"events": [{"type": "BENCH", "payload": {"n": i}} for i in range(100)]})


def server_state(url: str) -> dict[str, float]:
    """The server's forks, children's CPU, its own CPU in the kernel and in user space,
    the appends it put off while an fsync was still running, memory and append-only
    file size so far."""
    with sync_redis.Redis.from_url(url) as client:
        info: dict[str, Any] = client.info("everything")
    return {
        "forks": int(info.get("total_forks", 0)),
        "sys_s": float(info.get("used_cpu_sys", 0)),
        "user_s": float(info.get("used_cpu_user", 0)),
        "aof_delayed_fsync": int(info.get("aof_delayed_fsync", 0)),
        "children_cpu_s": float(info.get("used_cpu_sys_children", 0))
        + float(info.get("used_cpu_user_children", 0)),
        "used_memory_mb": round(int(info.get("used_memory", 0)) / 1e6, 1),
        "aof_mb": round(int(info.get("aof_current_size", 0)) / 1e6, 1),
    }


def meanwhile(url: str, before: dict[str, float]) -> dict[str, float]:
    after = server_state(url)
    sys_s, user_s = after["sys_s"] - before["sys_s"], after["user_s"] - before["user_s"]
    return {
        "forks": after["forks"] - before["forks"],
        "kernel_share": round(sys_s / max(sys_s + user_s, 1e-9), 3),
        "aof_delayed_fsync": after["aof_delayed_fsync"] - before["aof_delayed_fsync"],
        "children_cpu_s": round(after["children_cpu_s"] - before["children_cpu_s"], 2),
        "used_memory_mb": after["used_memory_mb"],
        "aof_mb": after["aof_mb"],
    }


def batch_ingest(run: Run, name: str, seconds: float) -> dict[str, Any]:
    """wrk posting batches of 100 for ``seconds`` to one API process of deployment
    ``name``, its backlog bound lifted (by default it answers 503 from 1,000,000 live
    events on). The rate is the events the deployment counted as received."""
    with api_process(run, name, EVENTSTREAM_MAX_BACKLOG="0") as base, Probe(run.settings(name)) as probe:
        received = probe.counter("received")
        before, state = usage(run.nodes), server_state(run.url)
        figures = load(run, f"{base}/events/batch", BATCH, seconds)
        events = probe.counter("received") - received
        redis = work(run.nodes, before, events, {})
    return {
        "events_per_s": round(events / seconds),
        "p99_ms": round(figures.get("p99_ms", float("nan")), 2),
        "errors": int(figures.get("errors", 0)),
        "redis_us_per_event": redis["cpu_us_per_event"],
        **meanwhile(run.url, state),
    }


def timed_drain(run: Run, name: str, events: int, progress: Progress, queued: bool) -> dict[str, Any]:
    state = server_state(run.url)
    figures = drain(run, name, events, progress, queued=queued)
    with Probe(run.settings(name)) as probe:
        left = probe.counter("received") - probe.counter("processed")
    return {
        "events_per_s": figures["events_per_s"],
        "left_queued": left,
        "worker_cpu_us_per_event": figures["worker_cpu_us_per_event"],
        "redis_us_per_event": figures["redis"]["cpu_us_per_event"],
        **meanwhile(run.url, state),
    }


def bench_backlog(run: Run, backlog: int, events: int, seconds: float, progress: Progress) -> None:
    task = progress.add_task("backlog: batch ingest, nothing queued", total=None)
    empty_ingest = batch_ingest(run, "ingestempty", seconds)
    progress.update(task, description="backlog: drain of a short queue")
    short_drain = timed_drain(run, "drainshort", events, progress, queued=False)
    progress.update(task, description=f"backlog: queueing {backlog:,} events")
    state, started = server_state(run.url), time.perf_counter()
    before = usage(run.nodes)
    asyncio.run(prequeue(run.settings("backlog"), backlog))
    queueing = {
        "events": backlog,
        "events_per_s": round(backlog / (time.perf_counter() - started)),
        "redis_us_per_event": work(run.nodes, before, backlog, {})["cpu_us_per_event"],
        **meanwhile(run.url, state),
    }
    progress.update(task, description=f"backlog: batch ingest, {backlog:,} queued")
    full_ingest = batch_ingest(run, "backlog", seconds)
    progress.update(task, description=f"backlog: drain of the first {events:,}")
    long_drain = timed_drain(run, "backlog", events, progress, queued=True)
    progress.update(task, total=1, completed=1)
    run.figures["backlog"] = {
        "backlog": backlog,
        "events": events,
        "ingest_empty": empty_ingest,
        "drain_short": short_drain,
        "queueing": queueing,
        "ingest_backlog": full_ingest,
        "drain_backlog": long_drain,
        "ingest_share": round(full_ingest["events_per_s"] / max(empty_ingest["events_per_s"], 1), 3),
        "drain_share": round(long_drain["events_per_s"] / max(short_drain["events_per_s"], 1), 3),
    }


def backlog_table(run: Run) -> Table:
    b = run.figures["backlog"]
    table = Table(
        title=f"EventStream with {b['backlog']:,} events queued",
        caption=f"server: {run.figures.get('redis_server', '?')}"
        + (f" with {run.figures['server_args']}" if run.figures.get("server_args") else "")
        + "; the server's forks and its children's CPU during each phase; its memory and "
        "append-only file after it",
    )
    for column in ("phase", "events/s", "share", "Redis µs/event", "in the kernel", "appends put off",
                   "forks", "children CPU", "used memory", "AOF"):  # fmt: skip
        table.add_column(column, justify="right")
    rows = [
        ("batch ingest, nothing queued", b["ingest_empty"], ""),
        (f"drain of {b['events']:,} queued alone", b["drain_short"], ""),
        (f"queueing {b['backlog']:,} (1,000 per call)", b["queueing"], ""),
        (f"batch ingest, {b['backlog']:,} queued", b["ingest_backlog"], f"{b['ingest_share']:.0%}"),
        (f"drain of the first {b['events']:,} of them", b["drain_backlog"], f"{b['drain_share']:.0%}"),
    ]
    for what, f, share in rows:
        table.add_row(
            what,
            f"{f['events_per_s']:,}",
            share,
            f"{f['redis_us_per_event']:g}",
            f"{f['kernel_share']:.0%}",
            str(f["aof_delayed_fsync"]),
            str(f["forks"]),
            f"{f['children_cpu_s']:g} s",
            f"{f['used_memory_mb']:g} MB",
            f"{f['aof_mb']:g} MB",
        )
    return table
