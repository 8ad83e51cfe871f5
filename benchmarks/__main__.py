"""EventStream benchmarks: one command, a table, and a JSON file with the same figures.

    .venv/bin/python -m benchmarks [--events 100000] [--seconds 10] [--quick]

Starts its own private Redis (the embedded server, appendfsync everysec; set
EVENTSTREAM_REDIS_SERVER to the path of another server binary to run on that one) and
the real `eventstream api` / `eventstream worker` processes, and measures:

- drain:        N events pre-queued, one worker process, no-op handler, store on
- ingest:       POST /events over keep-alive, 32 connections (wrk when installed)
- batch ingest: POST /events/batch with 100 events per request
- latency:      accepted -> processed at a fixed offered load (1,000 events/s)
- memory:       Redis bytes per queued event, and after a full drain
- ceiling:      pipelined XADD with redis-benchmark, on the same server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks.memory import measure as measure_memory
from eventstream.broker import Broker, Keys, connect
from eventstream.embedded import EmbeddedRedis, free_port
from eventstream.ingest.accept import IncomingEvent, enqueue, now_ms, to_envelope
from eventstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
console = Console()


@dataclass
class Run:
    """Everything one benchmark run needs: the server, a scratch dir, the figures."""

    server: EmbeddedRedis
    scratch: Path
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def env(self, name: str, **extra: str) -> dict[str, str]:
        data = self.scratch / name
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            EVENTSTREAM_REDIS_URL=self.server.url,
            EVENTSTREAM_PREFIX=name,
            EVENTSTREAM_DATA_DIR=str(data),
            EVENTSTREAM_LOG_LEVEL="warning",
            EVENTSTREAM_LOG_FORMAT="json",
            PYTHONPATH=str(ROOT),
        )
        env.update(extra)
        return env

    def settings(self, name: str) -> Settings:
        return Settings(redis_url=self.server.url, prefix=name, data_dir=self.scratch / name)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# ---- processes --------------------------------------------------------------------


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "eventstream", *args], env=env, stdout=out, stderr=out)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def api_process(run: Run, name: str, **env: str) -> Iterator[str]:
    port = free_port()
    proc = spawn(["api", "--port", str(port)], run.env(name, **env), run.scratch / f"{name}-api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"API did not become ready; see {run.scratch / f'{name}-api.log'}")
            time.sleep(0.05)
        yield base
    finally:
        stop(proc)


# ---- drain ------------------------------------------------------------------------


async def prequeue(settings: Settings, events: int) -> None:
    redis = await connect(settings.redis_url or "")
    broker = Broker(redis, Keys(settings.prefix))
    await broker.ensure_group()
    for start in range(0, events, 1000):
        items = [
            to_envelope(IncomingEvent(type="BENCH", payload={"n": start + i}), None, now_ms())
            for i in range(min(1000, events - start))
        ]
        await enqueue(broker, items, 60_000)
    await redis.aclose()


async def counter(settings: Settings, name: str) -> int:
    redis = await connect(settings.redis_url or "")
    value = await redis.hget(Keys(settings.prefix).counters, name)
    await redis.aclose()
    return int(value or 0)


def bench_drain(run: Run, events: int, progress: Progress) -> None:
    name = "drain"
    settings = run.settings(name)
    (run.scratch / name).mkdir(parents=True, exist_ok=True)
    task = progress.add_task("drain: queueing", total=events)
    asyncio.run(prequeue(settings, events))
    progress.update(task, description="drain: processing")
    proc = spawn(["worker", "--burst"], run.env(name), run.scratch / "drain-worker.log")
    first_t = first_n = None
    done = 0
    while done < events:
        done = asyncio.run(counter(settings, "processed"))
        now = time.perf_counter()
        if first_t is None and done > 0:
            first_t, first_n = now, done
        progress.update(task, completed=done)
        if proc.poll() is not None and done < events:
            raise RuntimeError(f"worker exited early; see {run.scratch / 'drain-worker.log'}")
        time.sleep(0.02)
    end_t = time.perf_counter()
    proc.wait(60)
    if first_t is None or first_n is None:
        raise RuntimeError("drain: nothing was processed")
    rate = (events - first_n) / max(end_t - first_t, 1e-9)
    run.figures["drain_events_per_s"] = round(rate)
    run.figures["drain_events"] = events


# ---- ingest -----------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for label in ("50%", "99%"):
        m = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            out[f"p{label[:-1]}_ms"] = float(m.group(1)) * UNITS_MS[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["errors"] = float(m.group(1)) if m else 0.0
    return out


def wrk(url: str, body: str, seconds: float, connections: int, scratch: Path) -> dict[str, float]:
    script = scratch / f"wrk-{abs(hash(body))}.lua"
    script.write_text(WRK_SCRIPT % body)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", str(script), url]  # fmt: skip
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(text)


async def python_load(url: str, body: str, seconds: float, connections: int) -> dict[str, float]:
    """Fallback load generator when wrk is missing (it may be the bottleneck)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += r.status_code >= 300

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": float(errors),
    }


def load(run: Run, url: str, body: str, seconds: float) -> dict[str, float]:
    if shutil.which("wrk"):
        return wrk(url, body, seconds, 32, run.scratch)
    return asyncio.run(python_load(url, body, seconds, 32))


def bench_ingest(run: Run, seconds: float, progress: Progress) -> None:
    generator = "wrk -t2 -c32" if shutil.which("wrk") else "python httpx, 32 connections"
    run.figures["load_generator"] = generator
    if not shutil.which("wrk"):
        run.notes.append("wrk is not installed: the Python load generator may be the bottleneck")
    task = progress.add_task("ingest: single events", total=2)
    with api_process(run, "ingest") as base:
        one = json.dumps({"type": "BENCH", "payload": {"user": "khushi", "n": 1}})
        single = load(run, f"{base}/events", one, seconds)
        progress.advance(task)
        progress.update(task, description="ingest: batches of 100")
        batch_body = json.dumps({"events": [{"type": "BENCH", "payload": {"n": i}} for i in range(100)]})
        batch = load(run, f"{base}/events/batch", batch_body, seconds)
        progress.advance(task)
    run.figures["ingest_rps"] = round(single.get("rps", 0))
    run.figures["ingest_p50_ms"] = round(single.get("p50_ms", float("nan")), 2)
    run.figures["ingest_p99_ms"] = round(single.get("p99_ms", float("nan")), 2)
    run.figures["ingest_errors"] = int(single.get("errors", 0))
    run.figures["batch_events_per_s"] = round(batch.get("rps", 0) * 100)
    run.figures["batch_errors"] = int(batch.get("errors", 0))


# ---- end-to-end latency -----------------------------------------------------------


async def paced_sender(
    url: str, rate: float, seconds: float, connections: int = 16, key_prefix: str | None = None
) -> list[str]:
    """Offer `rate` events/s for `seconds` on a fixed schedule (no coordinated omission).

    A lean HTTP/1.1 client over keep-alive connections (httpx costs too much CPU per
    request to offer 1,000/s here beside the server). Each request has a due time;
    a connection sends the next due request as soon as it is free.
    """
    parsed = httpx.URL(url)
    host, port, path = parsed.host, parsed.port or 80, parsed.raw_path.decode()
    total = int(rate * seconds)
    ids: list[str] = []
    next_index = 0
    start = time.perf_counter()

    async def connection() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = json.dumps({"type": "BENCH", "payload": {"n": i}}).encode()
                key = f"Idempotency-Key: {key_prefix}{i}\r\n" if key_prefix and i % 2 else ""
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{key}"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                answer = await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 202"):
                    ids.append(json.loads(answer)["eventId"])
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return ids


def wait_processed(settings: Settings, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while asyncio.run(counter(settings, "processed")) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"latency run: {n} events were not all processed within {timeout_s:g} s")
        time.sleep(0.05)


def bench_latency(run: Run, rate: float, seconds: float, progress: Progress) -> None:
    name = "latency"
    task = progress.add_task(f"latency: {rate:g} events/s for {seconds:g} s", total=None)
    worker = spawn(["worker"], run.env(name), run.scratch / "latency-worker.log")
    try:
        with api_process(run, name) as base:
            settings = run.settings(name)
            warmup = asyncio.run(paced_sender(f"{base}/events", rate, min(1.0, seconds)))
            wait_processed(settings, len(warmup))
            measured_from_ms = now_ms()
            sent_at = time.perf_counter()
            ids = asyncio.run(paced_sender(f"{base}/events", rate, seconds))
            achieved = len(ids) / max(time.perf_counter() - sent_at, 1e-9)
            wait_processed(settings, len(warmup) + len(ids))
    finally:
        stop(worker)
    db = sqlite3.connect(run.scratch / name / "events.db")
    rows = db.execute(
        "SELECT processed_at_ms - received_at_ms FROM eventstream_events WHERE received_at_ms >= ?",
        (measured_from_ms,),
    ).fetchall()
    db.close()
    values = sorted(float(r[0]) for r in rows)
    progress.update(task, total=1, completed=1)
    run.figures["latency_offered_per_s"] = rate
    run.figures["latency_achieved_per_s"] = round(achieved)
    run.figures["latency_events"] = len(values)
    run.figures["latency_p50_ms"] = percentile(values, 0.5)
    run.figures["latency_p99_ms"] = percentile(values, 0.99)
    run.figures["latency_max_ms"] = values[-1] if values else float("nan")


# ---- memory and ceiling -----------------------------------------------------------


def bench_memory(run: Run, events: int, progress: Progress) -> None:
    task = progress.add_task("memory", total=None)
    (run.scratch / "memory").mkdir()
    rows = asyncio.run(measure_memory(run.server.url, run.scratch / "memory", events, 1024))
    progress.update(task, total=1, completed=1)
    run.figures["memory"] = dict(rows)


def bench_ceiling(run: Run, progress: Progress) -> None:
    tool = shutil.which("redis-benchmark") or shutil.which("valkey-benchmark")
    if tool is None:
        run.notes.append("redis-benchmark is not installed: no raw Redis ceiling measured")
        return
    task = progress.add_task("ceiling: pipelined XADD", total=None)
    cmd = [tool, "-p", str(run.server.port), "-n", "200000", "-P", "64", "-q",
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
    return f"{name} {version}, {str(allocator).split('-')[0]} malloc"


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
    table = Table(title=title, caption=f"server: {f.get('redis_server', '?')}")
    table.add_column("benchmark")
    table.add_column("result", justify="right")
    if len(runs) > 1:
        table.add_column("range over the runs", justify="right")
    table.add_column("share of XADD ceiling", justify="right")

    def row(what: str, result: str, share_of: str, *keys: str) -> None:
        cells = [what, result, *([spread(*keys)] if len(runs) > 1 else []), share_of]
        table.add_row(*cells)

    row("drain, 1 worker process, no-op handler", f"{f.get('drain_events_per_s', 0):,} events/s",
        share(f.get("drain_events_per_s")), "drain_events_per_s")  # fmt: skip
    row(f"ingest POST /events ({f.get('load_generator')})", f"{f.get('ingest_rps', 0):,} req/s",
        share(f.get("ingest_rps")), "ingest_rps")  # fmt: skip
    row("ingest latency p50 / p99", f"{f.get('ingest_p50_ms')} / {f.get('ingest_p99_ms')} ms", "",
        "ingest_p50_ms", "ingest_p99_ms")  # fmt: skip
    row("batch ingest, 100 per request", f"{f.get('batch_events_per_s', 0):,} events/s",
        share(f.get("batch_events_per_s")), "batch_events_per_s")  # fmt: skip
    row(
        f"end-to-end at {f.get('latency_offered_per_s', 0):g}/s p50 / p99 / max",
        f"{f.get('latency_p50_ms')} / {f.get('latency_p99_ms')} / {f.get('latency_max_ms')} ms",
        "",
        "latency_p50_ms", "latency_p99_ms", "latency_max_ms",
    )  # fmt: skip
    for what, value in f.get("memory", {}).items():
        row(f"memory: {what}", value, "")
    if ceiling:
        row("raw pipelined XADD (redis-benchmark -P 64)", f"{ceiling:,}/s", "100%", "ceiling_xadd_per_s")
    return table


def one_run(args: argparse.Namespace, index: int, repeat: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="eventstream-bench-") as tmp:
        scratch = Path(tmp)
        with EmbeddedRedis(scratch / "redis") as server:
            run = Run(server, scratch)
            progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                console=console)  # fmt: skip
            if repeat > 1:
                console.print(f"run {index + 1} of {repeat}")
            run.figures["redis_server"] = asyncio.run(server_identity(server.url))
            with progress:
                bench_drain(run, args.events, progress)
                bench_ingest(run, args.seconds, progress)
                bench_latency(run, args.rate, args.latency_seconds, progress)
                bench_memory(run, args.memory_events, progress)
                bench_ceiling(run, progress)
    return run


def combine(runs: list[Run]) -> Run:
    """The median of every numeric figure over the runs; each run's figures kept under "runs"."""
    merged = Run(runs[0].server, runs[0].scratch, dict(runs[0].figures), [n for r in runs for n in r.notes])
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
    parser.add_argument("--events", type=int, default=100_000, help="events for the drain")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each ingest run")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered load for latency")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--memory-events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs; the table shows the median")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness runs")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    if args.quick:
        args.events, args.seconds, args.rate, args.latency_seconds, args.memory_events = (
            2000, 1.0, 200.0, 1.0, 1000,
        )  # fmt: skip

    runs = [one_run(args, i, args.repeat) for i in range(args.repeat)]
    run = runs[0] if len(runs) == 1 else combine(runs)
    run.figures["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    run.figures["notes"] = run.notes
    console.print(report(run))
    for note in run.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run.figures, indent=2))
    console.print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
