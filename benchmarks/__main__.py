"""EventStream benchmarks: one command, a table, and a JSON file with the same figures.

    .venv/bin/python -m benchmarks [--events 100000] [--seconds 10] [--quick]

Starts its own private Redis (the embedded server, appendfsync everysec; set
EVENTSTREAM_REDIS_SERVER to the path of another server binary to run on that one, and
--server-args "--appendonly no" to give it more arguments; the figures file records
its persistence settings) and
the real `eventstream api` / `eventstream worker` processes, and measures:

- drain:        N events pre-queued, one worker process, no-op handler, store on
- ingest:       POST /events over keep-alive, 32 connections (wrk when installed)
- batch ingest: POST /events/batch with 100 events per request
- latency:      accepted -> processed at a fixed offered load (1,000 events/s)
- memory:       Redis bytes per queued event, and after a full drain
- ceiling:      pipelined XADD with redis-benchmark, on the same server

The drain and the batch ingest also report the Redis CPU they cost per event (INFO cpu
of the server, benchmarks/nodes.py).

    .venv/bin/python -m benchmarks --cluster [--partitions 12]
    .venv/bin/python -m benchmarks --reads [--partitions 12]

--cluster runs the drain, the batch ingest and the read strategy on three set-ups: one
server with 1 partition, one server with N (12), and a local cluster of 3 primaries and
3 replicas (tests/support/cluster.py, appendfsync everysec like the server) with N;
for each node, the Redis CPU per event and its shares of commands and of events.
The read strategy ("reads", alone with --reads): end-to-end latency at a low offered
load (200 events/s for 10 s), then the commands per second an idle worker sends (5 s).

    .venv/bin/python -m benchmarks --ordering [--events 100000] [--ordering-keys 1000]

--ordering runs only what ordering keys cost, each beside the same work without keys
(benchmarks/ordering.py): the drain of N events over K keys against N events with no
key, and unkeyed events' end-to-end latency (--rate, for --ordering-seconds) alone and
beside a busy key with a slow handler in the same partition.

    .venv/bin/python -m benchmarks --payloads [--events 100000] [--seconds 10]

--payloads runs the drain and the batch ingest at payloads of 100 B, 1 KiB, 10 KiB and
100 KiB, in events/s, MB/s and CPU per KiB (benchmarks/payloads.py).

    .venv/bin/python -m benchmarks --profile [--events 100000] [--seconds 10]

--profile samples the worker during the drain and the API during the single-event
ingest with py-spy, and reports where their CPU goes in µs per event (benchmarks/profile.py).

    .venv/bin/python -m benchmarks --app-cost [--requests 20000]

--app-cost measures the API's own CPU per ingest request: POST /events and
/events/batch through the app called over ASGI in this process, beside the bare route
driven the same way (benchmarks/app_cost.py): no HTTP server, no load generator.

    .venv/bin/python -m benchmarks --ingest [--seconds 10]

--ingest runs only the ingest phase of the suite: the bare route and POST /events in
alternating windows, then batches of 100 (see bench_ingest).

    .venv/bin/python -m benchmarks --latency [--rate 1000] [--latency-seconds 30]

--latency runs only the end-to-end latency of the suite (and the worker's CPU per event
meanwhile), each run in a row of its own. With PYTHONPATH naming another checkout's
src/ first, the API and the worker run that code: alternate the two to compare them.

    .venv/bin/python -m benchmarks --dashboard [--rows 1000000] [--dead 100000]

--dashboard times every page of the dashboard (/ui) against one API process, with that
many processed events in the store and dead events in the DLQ (benchmarks/dashboard.py).

    .venv/bin/python -m benchmarks --producers [--events 3000] [--seconds 5]

--producers runs only what the producers carry, in events/s (benchmarks/producers.py):
Client.send, AsyncClient.send from 32 tasks, send_batch (100 and 1,000), the background
mode (enqueue, then flush) and app.publish / publish_sync in process, each beside the
raw HTTP request it makes (httpx), and the suite's own ingest figures (wrk, --seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from tests.support.cluster import LocalCluster

from benchmarks.app_cost import app_cost_table, bench_app_cost
from benchmarks.backlog import backlog_table, bench_backlog
from benchmarks.dashboard import bench_dashboard, dashboard_table
from benchmarks.harness import (
    ROOT,
    Probe,
    Run,
    api_process,
    bare_process,
    drain,
    measure_latency,
)
from benchmarks.httpload import NO_WRK, busy_s, ensure_wrk, generator, load
from benchmarks.memory import measure as measure_memory
from benchmarks.nodes import Node, usage, work
from benchmarks.ordering import bench_drains, busy_latency, ordering_table
from benchmarks.payloads import bench_payloads, payloads_table
from benchmarks.postgres import throwaway_database, where
from benchmarks.producers import bench_producers, merge, producers_table
from benchmarks.profile import bench_profile, profile_tables
from eventstream.broker import connect
from eventstream.embedded import EmbeddedRedis

RESULTS = ROOT / "benchmarks" / "results"
console = Console()


def bench_drain(run: Run, events: int, progress: Progress) -> None:
    figures = drain(run, "drain", events, progress)
    run.figures["drain_redis"] = figures["redis"]
    run.figures["drain_redis_us_per_event"] = figures["redis"]["cpu_us_per_event"]
    run.figures["drain_events_per_s"] = figures["events_per_s"]
    run.figures["drain_worker_cpu_us_per_event"] = figures["worker_cpu_us_per_event"]
    run.figures["drain_events"] = events


def bench_drain_sync(run: Run, events: int, progress: Progress) -> None:
    """The drain again, its no-op handler a plain ``def`` (run in the handler threads)."""
    figures = drain(run, "drainsync", events, progress, app="benchmarks.sync_app:app")
    run.figures["drain_sync_events_per_s"] = figures["events_per_s"]
    run.figures["drain_sync_worker_cpu_us_per_event"] = figures["worker_cpu_us_per_event"]


def bench_drain_postgres(run: Run, events: int, progress: Progress) -> None:
    """The drain again with the PostgreSQL store, in a throwaway database."""
    try:
        with throwaway_database() as url:
            figures = drain(run, "drainpg", events, progress, EVENTSTREAM_DATABASE_URL=url)
    except (OSError, asyncpg.PostgresError) as exc:
        run.notes.append(
            f"PostgreSQL at {where()} is unreachable ({exc}): no drain with the PostgreSQL store"
        )
        return
    run.figures["drain_pg_events_per_s"] = figures["events_per_s"]
    run.figures["drain_pg_redis_us_per_event"] = figures["redis"]["cpu_us_per_event"]
    run.figures["drain_pg_worker_cpu_us_per_event"] = figures["worker_cpu_us_per_event"]


# ---- ingest -----------------------------------------------------------------------


def bench_ingest(run: Run, seconds: float, progress: Progress, single_events: bool = True) -> None:
    """Single events (unless not ``single_events``) beside a bare Starlette route on
    uvicorn (the ceiling: benchmarks/bare_app.py, the same body), in alternating windows
    (see ``alternate``), on one API process; then batches of 100 on another. The batch
    rate counts the events the deployment accepted (an answer that is not 2xx is no
    ingest). Without wrk, no ingest figure (see benchmarks/httpload.py)."""
    run.figures["load_generator"] = generator(run.quick)
    if not run.quick and not ensure_wrk():
        run.notes.append(NO_WRK)
        return
    task = progress.add_task("ingest: single events", total=1 + 2 * single_events)
    name = "ingest"
    one = json.dumps({"type": "BENCH", "payload": {"user": "khushi", "n": 1}})
    with api_process(run, name) as base, Probe(run.settings(name)) as probe:
        if single_events:
            with bare_process(run) as bare_base:
                bare, single = alternate(run, {"bare": bare_base, "ingest": base}, one, seconds)
            run.figures["bare_cpu_us_per_request"] = bare["cpu_us_per_request"]
            run.figures["bare_rps"] = round(bare.get("rps", 0))
            run.figures["bare_p99_ms"] = round(bare.get("p99_ms", float("nan")), 2)
            run.figures["ingest_cpu_us_per_request"] = single["cpu_us_per_request"]
            run.figures["ingest_rps"] = round(single.get("rps", 0))
            run.figures["ingest_p50_ms"] = round(single.get("p50_ms", float("nan")), 2)
            run.figures["ingest_p99_ms"] = round(single.get("p99_ms", float("nan")), 2)
            run.figures["ingest_errors"] = int(single.get("errors", 0))
            run.figures["ingest_windows"] = single["windows"]
            run.figures["bare_windows"] = bare["windows"]
            if run.figures["bare_rps"]:
                run.figures["ingest_share_of_bare"] = round(
                    run.figures["ingest_rps"] / run.figures["bare_rps"], 3
                )
            progress.advance(task, 2)
    progress.update(task, description="ingest: batches of 100")
    batch_body = json.dumps({"events": [{"type": "BENCH", "payload": {"n": i}} for i in range(100)]})
    # A deployment of its own, its backlog bound lifted: at this rate, 10 s fill the
    # default bound of 1,000,000 live events, and the 503s after it are not ingest.
    name = "batch"
    with api_process(run, name, EVENTSTREAM_MAX_BACKLOG="0") as base, Probe(run.settings(name)) as probe:
        received = probe.by_partition("received")
        before = usage(run.nodes)
        cpu = run.cpu_s(base)
        batch = load(run, f"{base}/events/batch", batch_body, seconds)
        by_partition = [b - a for a, b in zip(received, probe.by_partition("received"), strict=True)]
        accepted = sum(by_partition)
        run.figures["batch_api_cpu_us_per_event"] = per(run.cpu_s(base) - cpu, {"requests": accepted})
        by_node = run.node_events(by_partition, name)
        run.figures["batch_redis"] = work(run.nodes, before, accepted, by_node)
        run.figures["batch_redis_us_per_event"] = run.figures["batch_redis"]["cpu_us_per_event"]
        progress.advance(task)
    run.figures["batch_seconds"] = round(busy_s(batch, seconds), 3)
    run.figures["batch_events_per_s"] = round(accepted / run.figures["batch_seconds"])
    run.figures["batch_errors"] = int(batch.get("errors", 0))


def alternate(run: Run, bases: dict[str, str], body: str, seconds: float) -> list[dict[str, Any]]:
    """POSTs of ``body`` to ``/events`` of each server for ``seconds`` in all, in windows
    of about 2 s that alternate between them (A B, B A, A B...), so that a machine whose
    speed drifts (a shared VM) weighs on both alike. Per server, in the order of
    ``bases``: requests and rate over its windows, the median of the windows' p50, the
    highest of their p99, errors, its process's CPU per request, and the windows."""
    rounds = max(1, min(5, int(seconds // 2)))
    window = seconds / rounds
    names = list(bases)
    seen: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    cpu = dict.fromkeys(names, 0.0)
    for i in range(rounds):
        for n in names if i % 2 == 0 else names[::-1]:
            before = run.cpu_s(bases[n])
            seen[n].append(load(run, f"{bases[n]}/events", body, window))
            cpu[n] += run.cpu_s(bases[n]) - before
    out = []
    for n in names:
        ws = seen[n]
        requests = sum(w.get("requests", 0) for w in ws)
        busy = sum(w.get("requests", 0) / w["rps"] for w in ws if w.get("rps"))
        out.append({
            "rps": requests / busy if busy else 0.0,
            "requests": requests,
            "p50_ms": statistics.median(w.get("p50_ms", float("nan")) for w in ws),
            "p99_ms": max(w.get("p99_ms", float("nan")) for w in ws),
            "errors": sum(w.get("errors", 0) for w in ws),
            "cpu_us_per_request": per(cpu[n], {"requests": requests}),
            "windows": [round(w.get("rps", 0)) for w in ws],
        })  # fmt: skip
    return out


def per(cpu_s: float, figures: dict[str, Any], events_per_request: int = 1) -> float | None:
    """CPU µs per event of a load run (``figures``: its requests)."""
    requests = figures.get("requests", 0)
    return round(cpu_s * 1e6 / (requests * events_per_request), 1) if requests else None


# ---- end-to-end latency -----------------------------------------------------------


def bench_latency(run: Run, rate: float, seconds: float, progress: Progress) -> None:
    figures = measure_latency(run, "latency", rate, seconds, progress)
    run.figures.update({f"latency_{key}": value for key, value in figures.items()})


def bench_reads(run: Run, rate: float, seconds: float, idle_s: float, progress: Progress) -> None:
    """The read strategy: end-to-end latency at a low offered load, and what the worker
    sends to Redis when there is nothing to read."""
    run.figures["reads"] = measure_latency(run, "reads", rate, seconds, progress, idle_s)


# ---- memory and ceiling -----------------------------------------------------------


def bench_memory(run: Run, events: int, progress: Progress) -> None:
    task = progress.add_task("memory", total=None)
    (run.scratch / "memory").mkdir()
    rows = asyncio.run(measure_memory(run.url, run.scratch / "memory", events, 1024))
    progress.update(task, total=1, completed=1)
    run.figures["memory"] = dict(rows)


def bench_ceiling(run: Run, progress: Progress) -> None:
    tool = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if tool is None:
        run.notes.append("redis-benchmark is not installed: no raw Redis ceiling measured")
        return
    task = progress.add_task("ceiling: pipelined XADD", total=None)
    cmd = [tool, "-p", str(httpx.URL(run.url).port), "-n", "200000", "-P", "64", "-q",
           "XADD", "{bench}:raw", "*", "f", "v"]  # fmt: skip
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+) requests per second", text.replace("\r", "\n"))
    progress.update(task, total=1, completed=1)
    if m:
        run.figures["ceiling_xadd_per_s"] = round(float(m.group(1)))


async def server_identity(url: str) -> str:
    """Which server the run used, e.g. ``valkey 8.1.8, libc malloc``: builds differ a lot
    (the allocator alone doubles the cost of a large script call)."""
    redis = await connect(url)
    try:
        info = await redis.info("server")
        allocator = (await redis.info("memory")).get("mem_allocator", "?")
    finally:
        await redis.aclose()
    name = info.get("server_name", "redis")
    version = info.get(f"{name}_version") or info.get("redis_version", "?")
    if maps_mimalloc(info.get("process_id")):  # INFO names the build's allocator
        return f"{name} {version}, mimalloc (preloaded into a {str(allocator).split('-')[0]} malloc build)"
    return f"{name} {version}, {str(allocator).split('-')[0]} malloc"


def maps_mimalloc(pid: object) -> bool:
    """Whether local process ``pid`` has mimalloc loaded (eventstream.embedded preloads it)."""
    try:
        return "/libmimalloc.so" in Path(f"/proc/{int(str(pid))}/maps").read_text()
    except (OSError, ValueError):
        return False


async def server_config(url: str) -> dict[str, str]:
    """The server's persistence settings, which change what every write costs."""
    redis = await connect(url)
    try:
        names = ("appendonly", "appendfsync", "auto-aof-rewrite-percentage", "save")
        return {name: str((await redis.config_get(name)).get(name, "?")) for name in names}
    finally:
        await redis.aclose()


# ---- report -----------------------------------------------------------------------


def report(run: Run) -> Table:
    f = run.figures
    ceiling = f.get("ceiling_xadd_per_s")

    def share(value: float | None) -> str:
        return f"{value / ceiling:.1%}" if ceiling and value else ""

    runs: list[dict[str, Any]] = f.get("runs", [])

    def spread(*keys: str) -> str:
        if len(runs) < 2:
            return ""
        parts = []
        for key in keys:
            values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
            parts.append(f"{min(values):,} to {max(values):,}" if values else "?")
        return " / ".join(parts)

    title = "EventStream benchmarks" + (f" (median of {len(runs)} runs)" if len(runs) > 1 else "")
    with_args = f" with {f['server_args']}" if f.get("server_args") else ""
    table = Table(title=title, caption=f"server: {f.get('redis_server', '?')}{with_args}")
    table.add_column("benchmark")
    table.add_column("result", justify="right")
    if len(runs) > 1:
        table.add_column("range over the runs", justify="right")
    table.add_column("share of XADD ceiling", justify="right")

    def row(what: str, result: str, share_of: str, *keys: str) -> None:
        cells = [what, result, *([spread(*keys)] if len(runs) > 1 else []), share_of]
        table.add_row(*cells)

    if "drain_events_per_s" in f:
        row("drain, 1 worker process, no-op handler", f"{f['drain_events_per_s']:,} events/s",
            share(f.get("drain_events_per_s")), "drain_events_per_s")  # fmt: skip
        row("drain: Redis CPU per event", f"{f.get('drain_redis_us_per_event')} µs", "",
            "drain_redis_us_per_event")  # fmt: skip
    if "drain_sync_events_per_s" in f:
        row("drain, no-op sync handler (def)", f"{f['drain_sync_events_per_s']:,} events/s",
            share(f.get("drain_sync_events_per_s")), "drain_sync_events_per_s")  # fmt: skip
        cpu = f"{f.get('drain_worker_cpu_us_per_event')} / {f.get('drain_sync_worker_cpu_us_per_event')} µs"
        row("drain: worker CPU per event, async / sync handler", cpu, "",
            "drain_worker_cpu_us_per_event", "drain_sync_worker_cpu_us_per_event")  # fmt: skip
    if "drain_pg_events_per_s" in f:
        row("drain, PostgreSQL store", f"{f['drain_pg_events_per_s']:,} events/s",
            share(f.get("drain_pg_events_per_s")), "drain_pg_events_per_s")  # fmt: skip
    if "ingest_rps" not in f and "batch_events_per_s" not in f:
        row(f"ingest ({f.get('load_generator')})", "not measured", "")
    if "bare_rps" in f:
        row(f"ceiling: a bare Starlette route on uvicorn ({f.get('load_generator')})",
            f"{f['bare_rps']:,} req/s, p99 {f.get('bare_p99_ms')} ms", "", "bare_rps")  # fmt: skip
    if "ingest_rps" in f:
        row(f"ingest POST /events ({f.get('load_generator')})", f"{f['ingest_rps']:,} req/s",
            share(f.get("ingest_rps")), "ingest_rps")  # fmt: skip
        row("ingest: share of the bare route", f"{f.get('ingest_share_of_bare', 0):.0%}", "",
            "ingest_share_of_bare")  # fmt: skip
        row("ingest latency p50 / p99", f"{f.get('ingest_p50_ms')} / {f.get('ingest_p99_ms')} ms", "",
            "ingest_p50_ms", "ingest_p99_ms")  # fmt: skip
        cpu = f"{f.get('bare_cpu_us_per_request')} / {f.get('ingest_cpu_us_per_request')} µs"
        row("ingest: server CPU per request, bare route / EventStream", cpu, "",
            "bare_cpu_us_per_request", "ingest_cpu_us_per_request")  # fmt: skip
    if "batch_events_per_s" in f:
        row("batch ingest, 100 per request", f"{f['batch_events_per_s']:,} events/s",
            share(f.get("batch_events_per_s")), "batch_events_per_s")  # fmt: skip
        row("batch ingest: Redis CPU per event", f"{f.get('batch_redis_us_per_event')} µs", "",
            "batch_redis_us_per_event")  # fmt: skip
        row("batch ingest: API CPU per event", f"{f.get('batch_api_cpu_us_per_event')} µs", "",
            "batch_api_cpu_us_per_event")  # fmt: skip
    for key, what in (("ingest_errors", "ingest POST /events"), ("batch_errors", "batch ingest")):
        if f.get(key):  # shown when there are any: refusals are fast, and wrk counts them as requests
            row(f"{what}: answers that were not 2xx", f"{f[key]:,}", "", key)
    if "latency_p50_ms" in f:
        row(
            f"end-to-end at {f.get('latency_offered_per_s', 0):g}/s p50 / p99 / max",
            f"{f.get('latency_p50_ms')} / {f.get('latency_p99_ms')} / {f.get('latency_max_ms')} ms",
            "",
            "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
        )  # fmt: skip
    if "latency_worker_cpu_us_per_event" in f:
        row(f"end-to-end at {f.get('latency_offered_per_s', 0):g}/s: worker CPU per event",
            f"{f['latency_worker_cpu_us_per_event']} µs", "", "latency_worker_cpu_us_per_event")  # fmt: skip
    for what, value in f.get("memory", {}).items():
        row(f"memory: {what}", value, "")
    if ceiling:
        row("raw pipelined XADD (redis-benchmark -P 64)", f"{ceiling:,}/s", "100%", "ceiling_xadd_per_s")
    return table


def reads_table(runs: list[Run], cluster: bool) -> Table:
    """One column per set-up: what the drain and the batch ingest cost Redis (with
    ``cluster``), and the read strategy's latency and idle commands."""
    title = "EventStream on a Redis Cluster" if cluster else "EventStream read strategy"
    table = Table(title=title, caption=f"server: {runs[0].figures.get('redis_server', '?')}")
    table.add_column("benchmark")
    for run in runs:
        table.add_column(run.figures["setup"], justify="right")

    def row(what: str, cell: Any) -> None:
        table.add_row(what, *(cell(r.figures) for r in runs))

    if cluster:
        row("drain, 1 worker process, no-op handler", lambda f: f"{f['drain_events_per_s']:,} events/s")
        row("drain: Redis CPU per event, all primaries", lambda f: f"{f['drain_redis_us_per_event']} µs")
        row("batch ingest, 100 per request", lambda f: f"{f['batch_events_per_s']:,} events/s")
        row("batch ingest: Redis CPU per event, all primaries",
            lambda f: f"{f['batch_redis_us_per_event']} µs")  # fmt: skip
    reads = runs[0].figures["reads"]
    row(f"end-to-end at {reads['offered_per_s']:g}/s p50 / p99 / max",
        lambda f: "{p50_ms:g} / {p99_ms:g} / {max_ms:g} ms".format(**f["reads"]))  # fmt: skip
    row("idle worker: XREADGROUP per second",
        lambda f: f"{f['reads']['idle_commands_per_s'].get('xreadgroup', 0):g}/s")  # fmt: skip
    row("idle worker: all commands per second", lambda f: f"{f['reads']['idle_commands_per_s']['all']:g}/s")
    return table


def nodes_table(run: Run) -> Table:
    """The Redis work of each node during the drain and the batch ingest."""
    table = Table(title=f"Redis work per node: {run.figures['setup']}",
                  caption="CPU: INFO cpu, sys + user; shares: of the primaries' commands (INFO "
                          "commandstats) and of the events (the partitions' counters)")  # fmt: skip
    table.add_column("node")
    for phase in ("drain", "batch ingest"):
        table.add_column(f"{phase}: CPU/event", justify="right")
        table.add_column("commands", justify="right")
        table.add_column("events", justify="right")
    drain, batch = run.figures["drain_redis"]["nodes"], run.figures["batch_redis"]["nodes"]
    for d, b in zip(drain, batch, strict=True):
        cells = [d["node"]]
        for n in (d, b):
            shares = [f"{n[k]:.1%}" if k in n else "" for k in ("commands_share", "events_share")]
            cells += [f"{n['cpu_us_per_event']} µs", *shares]
        table.add_row(*cells)
    return table


def latency_table(runs: list[Run]) -> Table:
    """--latency: each run's end-to-end figures, in a row of its own."""
    f = runs[0].figures
    table = Table(
        title=f"End to end (accepted -> processed) at {f['latency_offered_per_s']:g} events/s offered",
        caption=f"server: {f.get('redis_server', '?')}; one API and one worker process, store on",
    )
    for column in ("run", "events", "p50", "p99", "max", "worker CPU per event"):
        table.add_column(column, justify="right")
    for i, r in enumerate(runs, 1):
        g = r.figures
        table.add_row(str(i), f"{g['latency_events']:,}", f"{g['latency_p50_ms']:g} ms",
                      f"{g['latency_p99_ms']:g} ms", f"{g['latency_max_ms']:g} ms",
                      f"{g['latency_worker_cpu_us_per_event']:g} µs")  # fmt: skip
    return table


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console)


def each_run(args: argparse.Namespace) -> tuple[list[Run], Run]:
    """``--repeat`` runs of one mode, and the run whose figures are written: the only one,
    or one that holds every run's figures under "runs"."""
    runs = [one_run(args, i, args.repeat) for i in range(args.repeat)]
    return runs, runs[0] if len(runs) == 1 else replace(runs[0], figures={"runs": [r.figures for r in runs]})


def one_run(args: argparse.Namespace, index: int, repeat: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="eventstream-bench-") as tmp:
        scratch = Path(tmp)
        with EmbeddedRedis(scratch / "redis", extra_args=shlex.split(args.server_args)) as server:
            run = Run(
                server.url, scratch, args.partitions or 1, [Node("server", server.url)], quick=args.quick
            )
            run.figures["server_args"] = args.server_args
            run.figures["server_config"] = asyncio.run(server_config(server.url))
            progress = progress_bar()
            if repeat > 1:
                console.print(f"run {index + 1} of {repeat}")
            run.figures["redis_server"] = asyncio.run(server_identity(server.url))
            with progress:
                if args.producers:
                    bench_producers(run, args.events, args.seconds, progress)
                    return run
                if args.dashboard:
                    bench_dashboard(run, args.rows, args.dead, args.samples, progress)
                    return run
                if args.payloads:
                    bench_payloads(run, args.events, args.seconds, progress)
                    return run
                if args.backlog:
                    bench_backlog(run, args.backlog, args.events, args.seconds, progress)
                    return run
                if args.profile:
                    bench_profile(run, args.events, args.seconds, progress)
                    return run
                if args.app_cost:
                    bench_app_cost(run, args.requests, progress)
                    return run
                if args.latency:
                    bench_latency(run, args.rate, args.latency_seconds, progress)
                    return run
                if args.ingest:
                    bench_ingest(run, args.seconds, progress)
                    return run
                if args.ordering:
                    bench_drains(run, args.events, args.ordering_keys, progress)
                    busy_latency(run, args.rate, args.ordering_seconds, progress)
                    return run
                bench_drain(run, args.events, progress)
                bench_drain_sync(run, args.events, progress)
                bench_drain_postgres(run, args.events, progress)
                bench_ingest(run, args.seconds, progress)
                bench_latency(run, args.rate, args.latency_seconds, progress)
                bench_memory(run, args.memory_events, progress)
                bench_ceiling(run, progress)
    return run


@contextmanager
def target(scratch: Path, cluster: bool) -> Iterator[tuple[str, list[Node], list[tuple[int, int, str]]]]:
    """A fresh single server, or a local 3+3 cluster (appendfsync everysec, as the server;
    the default node timeout): its URL, its nodes, and the slot ranges of its primaries."""
    if not cluster:
        with EmbeddedRedis(scratch / "redis") as server:
            yield server.url, [Node("server", server.url)], []
        return
    with LocalCluster(scratch / "cluster", fsync="everysec", node_timeout_ms=15_000) as c:
        shape = c.shape()
        url = {n.port: n.url for n in c.nodes}
        nodes = [Node(f"primary :{p}", url[p]) for first, last, p, _ in shape]
        nodes += [Node(f"replica :{r} (of :{p})", url[r], "replica") for _, _, p, rs in shape for r in rs]
        yield c.url, nodes, [(first, last, url[p]) for first, last, p, _ in shape]


def setup_run(args: argparse.Namespace, scratch: Path, label: str, partitions: int, cluster: bool) -> Run:
    """The read strategy (and with --cluster, the drain and the batch ingest) on one set-up."""
    with target(scratch, cluster) as (url, nodes, slots):
        run = Run(url, scratch, partitions, nodes, slots=slots, quick=args.quick)
        run.figures["setup"] = label
        run.figures["partitions"] = partitions
        run.figures["redis_server"] = asyncio.run(server_identity(url))
        if cluster:
            held = run.node_events([1] * partitions, "drain")
            primaries = [n for n in nodes if n.role == "primary"]
            run.figures["partitions_by_node"] = {n.name: held.get(n.url, 0) for n in primaries}
        console.print(label)
        with progress_bar() as progress:
            if args.cluster:
                bench_drain(run, args.events, progress)
                bench_ingest(run, args.seconds, progress, single_events=False)
            bench_reads(run, args.reads_rate, args.reads_seconds, args.idle_seconds, progress)
    return run


def setups_run(args: argparse.Namespace) -> list[Run]:
    """--cluster: one server with 1 and with N partitions, then the cluster with N.
    --reads: one server with --partitions."""
    n = args.partitions or (12 if args.cluster else 1)
    setups = [("one server, 1 partition", 1, False), (f"one server, {n} partitions", n, False),
              (f"cluster of 3 primaries, {n} partitions", n, True)]  # fmt: skip
    if not args.cluster:
        setups = [(f"one server, {n} partition{'s' * (n > 1)}", n, False)]
    with tempfile.TemporaryDirectory(prefix="eventstream-bench-") as tmp:
        return [setup_run(args, Path(tmp) / str(i), *setup) for i, setup in enumerate(setups)]


def combine(runs: list[Run]) -> Run:
    """The median of every numeric figure over the runs; each run's figures kept under "runs"."""
    merged = replace(runs[0], figures=dict(runs[0].figures), notes=[n for r in runs for n in r.notes])
    for key, value in runs[0].figures.items():
        values = [r.figures.get(key) for r in runs]
        if isinstance(value, int | float) and all(isinstance(v, int | float) for v in values):
            median = statistics.median(v for v in values if v is not None)
            merged.figures[key] = round(median, 2) if isinstance(value, float) else round(median)
    merged.figures["runs"] = [r.figures for r in runs]
    merged.notes = sorted(set(merged.notes))
    merged.notes.append(f"median of {len(runs)} runs; each run's figures are in the JSON file")
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description="EventStream benchmarks")
    parser.add_argument(
        "--events", type=int, help="events for the drain (default 100,000); --producers: per figure (3,000)"
    )
    parser.add_argument(
        "--seconds", type=float, help="duration of each ingest run (default 10; --producers: 5)"
    )
    parser.add_argument("--server-args", default="",
                        help="more arguments for the private server, e.g. \"--appendonly no\" (not "
                             "with --cluster or --reads)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=1000.0, help="offered load for latency")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--ingest", action="store_true",
                        help="only the ingest phase: the bare route, POST /events, batches")  # fmt: skip
    parser.add_argument("--latency", action="store_true",
                        help="only the end-to-end latency, each run in a row")  # fmt: skip
    parser.add_argument("--memory-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs; the table shows the median")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    group = parser.add_argument_group("partitions, the read strategy and Redis Cluster")
    group.add_argument(
        "--partitions", type=int, help="the deployment's partitions (default 1; --cluster: 12)"
    )
    group.add_argument("--cluster", action="store_true",
                       help="drain, batch ingest and reads on one server with 1 and N partitions "
                            "and on a local cluster of 3 primaries with N, Redis CPU per node")  # fmt: skip
    group.add_argument("--reads", action="store_true",
                       help="only the read strategy, on one server with --partitions")  # fmt: skip
    group.add_argument("--reads-rate", type=float, default=200.0, help="offered load for reads")
    group.add_argument("--reads-seconds", type=float, default=10.0)
    group.add_argument("--idle-seconds", type=float, default=5.0, help="idle worker, for reads")
    group = parser.add_argument_group("ordering keys")
    group.add_argument("--ordering", action="store_true",
                       help="only the ordering benchmarks: the drain with and without ordering keys, "
                            "and unkeyed latency with and without a busy key (--rate)")  # fmt: skip
    group.add_argument("--ordering-keys", type=int, default=1000, help="ordering keys of the keyed drain")
    group.add_argument("--ordering-seconds", type=float, default=10.0, help="each latency run")
    group = parser.add_argument_group("producers")
    group.add_argument("--producers", action="store_true",
                       help="only the producers: Client.send, AsyncClient.send, send_batch, the "
                            "background mode and app.publish, each beside the raw HTTP request")  # fmt: skip
    group = parser.add_argument_group("payload sizes")
    group.add_argument("--payloads", action="store_true",
                       help="only the drain and the batch ingest at payloads of 100 B, 1 KiB, 10 KiB "
                            "and 100 KiB, in events/s and MB/s")  # fmt: skip
    group = parser.add_argument_group("backlog")
    group.add_argument("--backlog", type=int, nargs="?", const=1_000_000,
                       help="only the batch ingest and the drain of the first --events with this many "
                            "events queued (default 1,000,000), each beside an empty server")  # fmt: skip
    group = parser.add_argument_group("profiles")
    group.add_argument("--profile", action="store_true",
                       help="only where the worker's and the API's CPU goes, in µs per event (py-spy "
                            "during the drain and the single-event ingest)")  # fmt: skip
    group = parser.add_argument_group("app cost")
    group.add_argument("--app-cost", action="store_true",
                       help="only the API's own CPU per ingest request: the app called over ASGI "
                            "in this process, beside the bare route (no HTTP server, no load "
                            "generator)")  # fmt: skip
    group.add_argument("--requests", type=int, default=20_000, help="timed requests of --app-cost")
    group = parser.add_argument_group("dashboard")
    group.add_argument("--dashboard", action="store_true",
                       help="only the dashboard pages, timed with big data")  # fmt: skip
    group.add_argument("--rows", type=int, default=1_000_000, help="processed events in the store")
    group.add_argument("--dead", type=int, default=100_000, help="events in the dead-letter queue")
    group.add_argument("--samples", type=int, default=20, help="timed requests per page")
    args = parser.parse_args()
    if args.server_args and (args.cluster or args.reads):
        parser.error("--server-args applies to the single private server, not to --cluster or --reads")
    args.events = args.events or (3000 if args.producers else 100_000)
    args.seconds = args.seconds or (5.0 if args.producers else 10.0)
    if args.quick:
        args.events, args.seconds, args.rate, args.latency_seconds, args.memory_events = (
            2000, 1.0, 200.0, 1.0, 1000,
        )  # fmt: skip
        args.reads_seconds, args.idle_seconds = 1.0, 1.0
        args.ordering_keys, args.ordering_seconds = 100, 1.0
        if args.producers:
            args.events = 100
        args.rows, args.dead, args.samples = 20_000, 2_000, 3
        args.backlog = args.backlog and 5000
        args.requests = 320
    if (
        (args.cluster or args.producers or args.payloads or args.profile or args.backlog)
        and not args.quick
        and not ensure_wrk()
    ):
        console.print(f"[red]{NO_WRK}[/red]")  # their tables are made of ingest figures
        raise SystemExit(2)
    load_before = os.getloadavg()

    if args.cluster or args.reads:
        runs = setups_run(args)
        run = Run(runs[0].url, runs[0].scratch, figures={"setups": [r.figures for r in runs]})
        run.notes = sorted({n for r in runs for n in r.notes})
        tables = [reads_table(runs, args.cluster), *(nodes_table(r) for r in runs if args.cluster)]
    elif args.dashboard:
        run = one_run(args, 0, 1)
        tables = [dashboard_table(run.figures, run.figures["redis_server"])]
    elif args.producers:
        runs = [one_run(args, i, args.repeat) for i in range(args.repeat)]
        run = replace(runs[0], figures={"producers": merge(runs), "runs": [r.figures for r in runs]})
        run.figures["redis_server"] = runs[0].figures["redis_server"]
        tables = [producers_table(run.figures["producers"], run.figures["redis_server"])]
    elif args.profile:
        run = one_run(args, 0, 1)
        tables = profile_tables(run)
    elif args.app_cost:
        runs, run = each_run(args)
        tables = [app_cost_table(r) for r in runs]
    elif args.payloads:
        runs, run = each_run(args)
        tables = [payloads_table(r) for r in runs]
    elif args.backlog:
        runs, run = each_run(args)
        tables = [backlog_table(r) for r in runs]
    elif args.latency:
        runs, run = each_run(args)
        tables = [latency_table(runs)]
    elif args.ordering:
        runs, run = each_run(args)
        tables = [ordering_table(r) for r in runs]
    else:
        runs = [one_run(args, i, args.repeat) for i in range(args.repeat)]
        run = runs[0] if len(runs) == 1 else combine(runs)
        tables = [report(run)]
    run.figures["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    run.figures["notes"] = run.notes
    for table in tables:
        console.print(table)
    for note in run.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run.figures, indent=2))
    console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
