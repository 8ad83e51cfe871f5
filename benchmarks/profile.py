"""Where the worker's and the API's time goes (`python -m benchmarks --profile`): py-spy
samples the worker through the suite's drain and the API through the suite's
single-event ingest (wrk), and each sample is put in one part of the work, reported in
µs per event.

Each sample is a stack of one thread that was running (py-spy leaves out idle ones, and
so does IDLE: a helper thread waiting for work in a C call), so samples count CPU time
(the GIL lets one thread run Python at a time; a thread in a C call that released it
counts too). A sample goes to the first part whose rule matches,
looking from the innermost frame outwards: a library's frame (the Redis client, the
store's SQLAlchemy and drivers, the HTTP server and framework, logging and metrics; see
LIBRARIES) or an EventStream frame that one of the side's rules names (see WORKER and
API) decides; a stack with neither is the event loop's own (asyncio, uvloop) or
"other". So the framework's work inside EventStream's middleware counts as HTTP, and
a handler's await of Redis as the Redis client.
µs per event = samples in the part / the sampling rate / the events of the phase.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, free_port, prequeue, serving
from benchmarks.httpload import load

RATE_HZ = 250  # samples per second per thread
BODY = '{"type":"BENCH","payload":{"user":"khushi","n":1}}'

# (part, rule on "function (file)") in order; the first EventStream frame from the inside
# that matches decides. Frames look like "run (eventstream/worker/dispatch.py)".
WORKER = [
    ("reading", r"eventstream/broker/(reading|entries)\.py|_read_loop|read_new|_dispatch \("),
    ("settle", r"eventstream/worker/settle\.py|_settle|eventstream/broker/(broker|scripts|emits)\.py"),
    ("handler call", r"eventstream/worker/(dispatch|tracing)\.py|eventstream/(event|app)\.py|_handle \("),
    ("dispatch", r"eventstream/worker/runner\.py|eventstream/tasks\.py"),
]
API = [
    (
        "ingest (checks, envelope, enqueue)",
        r"eventstream/(ingest|incoming|event)|eventstream/api/(events|ingest|fastpath)",
    ),
    (
        "auth, rate limits and the other middleware",
        r"eventstream/(auth|api/(guard|security|server|middleware))",
    ),
    ("EventStream's other code", r"eventstream/"),
]
LIBRARIES = [  # (part, rule): the innermost frame of one of these decides, whoever called it
    ("Redis client", re.compile(r"\((.*/)?(redis|hiredis)/")),
    (
        "store",
        re.compile(r"\((.*/)?(sqlalchemy|aiosqlite|asyncpg|sqlite3)/|eventstream/store/|write_rows|_row \("),
    ),
    (
        "HTTP (uvicorn, Starlette, FastAPI)",
        re.compile(r"\((.*/)?(uvicorn|httptools|starlette|fastapi|h11|anyio)/"),
    ),
    (
        "logs and metrics",
        re.compile(r"\((.*/)?(structlog|prometheus_client|logging)/|eventstream/(logs|metrics)"),
    ),
]
LOOP = re.compile(r"\((.*/)?(asyncio|uvloop)/")
# A helper thread waiting for work: its innermost Python frame is its loop, blocked in a
# C call that released the GIL (a queue's get, a lock), which py-spy cannot tell from
# running. These samples are left out: the store's writer thread, aiosqlite's (its
# loop, or threading.py's wait in older versions), the handler threads.
IDLE = re.compile(
    r"^(_worker \((.*/)?concurrent/futures/thread\.py\)|wait \((.*/)?threading\.py\)"
    r"|_connection_worker_thread \((.*/)?aiosqlite/core\.py\)"
    r"|_work \((.*/)?eventstream/worker/threads\.py\))$"
)


def classify(frames: list[str], rules: list[tuple[str, str]]) -> str:
    """The part a stack (outermost frame first) belongs to: looking from the innermost
    frame outwards, the first frame of a library in LIBRARIES, or of EventStream that a
    rule names, decides; else the event loop's own, or "other"."""
    for frame in reversed(frames):
        for part, rule in LIBRARIES:
            if rule.search(frame):
                return part
        if "eventstream/" in frame:
            for part, pattern in rules:
                if re.search(pattern, frame):
                    return part
    if any(LOOP.search(f) for f in frames):
        return "event loop"
    return "other"


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: ``frame;frame;...;frame count`` per line."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def parts_of(raw: str, rules: list[tuple[str, str]], events: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    idle = 0
    for frames, n in parse_raw(raw):
        if IDLE.match(frames[-1]):
            idle += n
        else:
            counts[classify(frames, rules)] += n
    total = sum(counts.values())
    per_event = {p: round(n / RATE_HZ / max(events, 1) * 1e6, 2) for p, n in counts.most_common()}
    return {"samples": total, "idle_samples": idle, "events": events, "us_per_event": per_event,
            "total_us_per_event": round(total / RATE_HZ / max(events, 1) * 1e6, 2)}  # fmt: skip


def py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (the venv's)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def record(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` until it exits (or py-spy gets SIGINT), once attached."""
    tool = py_spy()
    assert tool is not None
    cmd = [tool, "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--format", "raw",
           "--nolineno", "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.2)  # it attaches within a few ms; this leaves room on a busy machine
    if proc.poll() is not None:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"py-spy could not attach to process {pid}: {err.strip()[-500:]}")
    return proc


def finish(spy: subprocess.Popen[bytes], out: Path) -> str:
    try:
        spy.wait(60)
    except subprocess.TimeoutExpired:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    if not out.exists():
        err = spy.stderr.read().decode() if spy.stderr else ""
        raise RuntimeError(f"py-spy wrote no profile: {err.strip()[-500:]}")
    return out.read_text()


def profile_worker(run: Run, events: int, progress: Progress) -> dict[str, Any]:
    """The drain of ``events`` under py-spy, from the first event processed (start-up
    left out) to the last; the events counted are those processed meanwhile."""
    name = "profdrain"
    settings = run.settings(name)
    (run.scratch / name).mkdir(parents=True, exist_ok=True)
    task = progress.add_task("profile: the worker's drain", total=events)
    asyncio.run(prequeue(settings, events))
    log = run.scratch / f"{name}-worker.log"
    with log.open("ab") as sink:
        worker = subprocess.Popen([sys.executable, "-m", "eventstream", "worker"], env=run.env(name),
                                  stdout=sink, stderr=sink)  # fmt: skip
    out = run.scratch / "worker.raw"
    try:
        with Probe(settings) as probe:
            while probe.counter("processed") == 0:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited; see {log}")
                time.sleep(0.01)
            spy = record(worker.pid, out)
            start = probe.counter("processed")
            while (done := probe.counter("processed")) < events:
                progress.update(task, completed=done)
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited early; see {log}")
                time.sleep(0.02)
            spy.send_signal(signal.SIGINT)
            raw = finish(spy, out)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    progress.update(task, completed=events)
    return parts_of(raw, WORKER, events - start)


def profile_api(run: Run, seconds: float, progress: Progress) -> dict[str, Any]:
    """Single-event ingest (wrk -t2 -c32 for ``seconds``) under py-spy."""
    name = "profapi"
    task = progress.add_task("profile: the API's ingest", total=1)
    port = free_port()
    log = run.scratch / f"{name}-api.log"
    with log.open("ab") as sink:
        api = subprocess.Popen([sys.executable, "-m", "eventstream", "api", "--port", str(port)],
                               env=run.env(name), stdout=sink, stderr=sink)  # fmt: skip
    out = run.scratch / "api.raw"
    with serving(api, port, log) as base, Probe(run.settings(name)) as probe:
        spy = record(api.pid, out)
        before = probe.counter("received")
        figures = load(run, f"{base}/events", BODY, seconds)
        received = probe.counter("received") - before
        spy.send_signal(signal.SIGINT)
        raw = finish(spy, out)
    progress.advance(task)
    out_figures = parts_of(raw, API, received)
    out_figures["requests_per_s"] = round(figures.get("rps", 0))
    return out_figures


def bench_profile(run: Run, events: int, seconds: float, progress: Progress) -> None:
    if py_spy() is None:
        run.notes.append("py-spy is not installed (pip install py-spy): no profile taken")
        return
    if os.uname().sysname == "Darwin" and os.geteuid() != 0:
        run.notes.append("py-spy needs root on macOS (sudo): no profile taken")
        return
    if run.quick:  # still enough for a drain that outlasts py-spy's attaching
        events = max(events, 20_000)
    run.figures["profile"] = {
        "rate_hz": RATE_HZ,
        "worker": profile_worker(run, events, progress),
        "api": profile_api(run, seconds, progress),
    }


def profile_tables(run: Run) -> list[Table]:
    p = run.figures.get("profile")
    if not p:
        return []
    tables = []
    for side, title in (("worker", "the worker, draining"), ("api", "the API, single-event ingest")):
        f = p[side]
        table = Table(
            title=f"Where {title} spends its CPU: µs per event (py-spy, {p['rate_hz']} Hz)",
            caption=f"{f['events']:,} events, {f['samples']:,} samples "
            f"({f.get('idle_samples', 0):,} of threads waiting for work left out), "
            f"{f['total_us_per_event']} µs per event in all",
        )
        table.add_column("part")
        table.add_column("µs per event", justify="right")
        table.add_column("share", justify="right")
        for part, us in f["us_per_event"].items():
            table.add_row(part, f"{us:g}", f"{us / f['total_us_per_event']:.0%}")
        tables.append(table)
    return tables
