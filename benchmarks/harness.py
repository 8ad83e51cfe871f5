"""What the benchmarks share: a run's server and figures, the real `eventstream`
processes, queueing events straight into Redis, reading the deployment's counters, a
paced HTTP sender, and the drain of pre-queued events."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.crc import key_slot
from rich.progress import Progress

from benchmarks.nodes import Node, rates, usage, work
from eventstream.broker import Broker, Layout, connect
from eventstream.embedded import free_port
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """Everything one benchmark run needs: the server (or a cluster node's URL), the
    deployment's partitions, the nodes whose work is measured, a scratch dir, the figures."""

    url: str
    scratch: Path
    partitions: int = 1
    nodes: list[Node] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    slots: list[tuple[int, int, str]] = field(default_factory=list)  # cluster: first, last, node URL
    quick: bool = False  # tiny sizes: the harness is checked, no figure is meant
    pids: dict[str, int] = field(default_factory=dict)  # base URL -> process serving it

    def cpu_s(self, base: str) -> float:
        """The CPU seconds the process serving ``base`` has used so far."""
        return cpu_s(self.pids[base])

    def env(self, name: str, **extra: str) -> dict[str, str]:
        data = self.scratch / name
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            EVENTSTREAM_REDIS_URL=self.url,
            EVENTSTREAM_PARTITIONS=str(self.partitions),
            EVENTSTREAM_PREFIX=name,
            EVENTSTREAM_DATA_DIR=str(data),
            EVENTSTREAM_LOG_LEVEL="warning",
            EVENTSTREAM_LOG_FORMAT="json",
            # the benchmark's own PYTHONPATH first: another checkout's src/ there runs
            # that code (an A/B of two versions)
            PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])),
        )
        env.update(extra)
        return env

    def settings(self, name: str) -> Settings:
        return Settings(
            redis_url=self.url, prefix=name, data_dir=self.scratch / name, partitions=self.partitions
        )

    def node_events(self, by_partition: list[int], name: str) -> dict[str, int]:
        """Events per node URL, from each partition's count."""
        out: dict[str, int] = {}
        for keys, n in zip(Layout(name, self.partitions).parts, by_partition, strict=True):
            slot = key_slot(keys.tag.encode())
            url = next((u for first, last, u in self.slots if first <= slot <= last), self.url)
            out[url] = out.get(url, 0) + n
        return out


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# ---- processes --------------------------------------------------------------------


def spawn(
    args: list[str], env: dict[str, str], log: Path, module: str = "eventstream"
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=out, stderr=out)


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
    """``eventstream api`` on a free port: its base URL once GET /readyz answers 200."""
    port = free_port()
    proc = spawn(["api", "--port", str(port)], run.env(name, **env), run.scratch / f"{name}-api.log")
    with serving(proc, port, run.scratch / f"{name}-api.log") as base:
        run.pids[base] = proc.pid
        yield base


@contextmanager
def bare_process(run: Run) -> Iterator[str]:
    """The bare Starlette route (benchmarks/bare_app.py), the single-event ceiling."""
    port = free_port()
    log = run.scratch / "bare-app.log"
    proc = spawn([str(port)], run.env("bare"), log, module="benchmarks.bare_app")
    with serving(proc, port, log) as base:
        run.pids[base] = proc.pid
        yield base


@contextmanager
def serving(proc: subprocess.Popen[bytes], port: int, log: Path) -> Iterator[str]:
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
                raise RuntimeError(f"{base} did not become ready; see {log}")
            time.sleep(0.05)
        yield base
    finally:
        stop(proc)


# ---- drain ------------------------------------------------------------------------


Payload = Callable[[int], dict[str, Any]]  # event n's payload


async def prequeue(
    settings: Settings, events: int, keys: int = 0, event_type: str = "BENCH", key_name: str = "key",
    payload: Payload | None = None, per_call: int = 1000,
) -> None:  # fmt: skip
    """``events`` events queued in calls of up to ``per_call``, as many calls to every partition
    (each call goes to the next partition in turn). With ``keys``, event n carries the
    ordering key ``<key_name>-<n % keys>`` (the keys interleaved, as many events each).
    ``payload``: event n's payload (default ``{"n": n}``)."""
    redis = await connect(settings.redis_url or "")
    broker = Broker(redis, Layout(settings.prefix, settings.partitions))
    await broker.ensure_group()
    calls = settings.partitions * -(-events // (per_call * settings.partitions))
    start = 0
    for call in range(calls):
        size = events // calls + (call < events % calls)
        items = [
            to_envelope(
                IncomingEvent(
                    type=event_type,
                    payload=payload(start + i) if payload else {"n": start + i},
                    orderingKey=f"{key_name}-{(start + i) % keys}" if keys else None,
                ),
                None,
                now_ms(),
            )
            for i in range(size)
        ]
        await enqueue(broker, items, 60_000)
        start += size
    await redis.aclose()


class Probe:
    """A deployment's counters, read over one client kept for the whole phase (a cluster
    client costs a CLUSTER SLOTS and a COMMAND to make, on the nodes being measured)."""

    def __init__(self, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._redis = self._loop.run_until_complete(connect(settings.redis_url or ""))
        self._layout = Layout(settings.prefix, settings.partitions)
        self._broker = Broker(self._redis, self._layout)

    def counter(self, name: str) -> int:
        return self._loop.run_until_complete(self._broker.counters()).get(name, 0)

    def by_partition(self, name: str) -> list[int]:
        async def read() -> list[int]:
            return [int(await self._redis.hget(k.counters, name) or 0) for k in self._layout.parts]

        return self._loop.run_until_complete(read())

    def close(self) -> None:
        self._loop.run_until_complete(self._redis.aclose())
        self._loop.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process so far (0 when it is gone or there is no
    /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def drain(
    run: Run, name: str, events: int, progress: Progress, keys: int = 0, payload: Payload | None = None,
    app: str | None = None, queued: bool = False, **env: str,
) -> dict[str, Any]:  # fmt: skip
    """``events`` events queued (``keys``: over that many ordering keys, see prequeue),
    then drained by one ``eventstream worker --burst`` with the default settings and the
    default no-op app (or ``app``), store on. The rate is taken from the first event processed to the
    last (the queueing is not timed); the Redis work is the whole phase's (and, apart,
    the queueing's: with keys, the XADD of a parked event moves to the drain); the worker's
    CPU is counted from the first event processed to its exit (start-up left out), a
    figure that a busy machine disturbs less than the rate. ``env``: more of the worker's
    environment (EVENTSTREAM_DATABASE_URL for another store); ``payload`` as prequeue's.
    ``queued``: the events are queued already (maybe more than ``events``: the worker is
    stopped once ``events`` are processed, and nothing is queued or measured for queueing)."""
    settings = run.settings(name)
    (run.scratch / name).mkdir(parents=True, exist_ok=True)
    task = progress.add_task(f"{name}: queueing", total=events)
    queueing: dict[str, Any] = {"cpu_us_per_event": None}
    if not queued:
        before = usage(run.nodes)
        per_call = 1000 if payload is None else max(1, min(1000, 10_000_000 // len(str(payload(0)))))
        asyncio.run(prequeue(settings, events, keys, payload=payload, per_call=per_call))
        queueing = work(run.nodes, before, events, {})
    progress.update(task, description=f"{name}: processing")
    probe = Probe(settings)
    before = usage(run.nodes)
    log = run.scratch / f"{name}-worker.log"
    children_before = children_cpu_s()
    proc = spawn(["worker", "--burst", *([app] if app else [])], run.env(name, **env), log)
    first_t = first_n = None
    start_cpu_s = 0.0
    done = 0
    while done < events:
        done = probe.counter("processed")
        now = time.perf_counter()
        if first_t is None and done > 0:
            first_t, first_n = now, done
            start_cpu_s = cpu_s(proc.pid)
        progress.update(task, completed=done)
        if proc.poll() is not None and done < events:
            raise RuntimeError(f"worker exited early; see {log}")
        time.sleep(0.02)
    end_t = time.perf_counter()
    if queued:
        stop(proc)  # what is left of a longer queue is not drained
    else:
        proc.wait(60)
    worker_cpu_s = children_cpu_s() - children_before - start_cpu_s
    redis = work(run.nodes, before, events, run.node_events(probe.by_partition("processed"), name))
    probe.close()
    if first_t is None or first_n is None:
        raise RuntimeError(f"{name}: nothing was processed")
    rate = (events - first_n) / max(end_t - first_t, 1e-9)
    return {
        "events": events,
        "keys": keys,
        "events_per_s": round(rate),
        "worker_cpu_us_per_event": round(worker_cpu_s * 1e6 / max(events - first_n, 1), 2),
        "redis": redis,
        "queueing_redis_us_per_event": queueing["cpu_us_per_event"],
    }


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


def processed_rows(db: Path, event_type: str, since_ms: int = 0) -> int:
    """How many events of ``event_type`` received since ``since_ms`` the store holds (0
    before the worker made its database)."""
    if not db.exists():
        return 0
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            row = conn.execute(
                "SELECT count(*) FROM eventstream_events WHERE type = ? AND received_at_ms >= ?",
                (event_type, since_ms),
            ).fetchone()
        except sqlite3.OperationalError:  # the tables are not made yet
            return 0
    return int(row[0])


def wait_processed(done: Callable[[], int], n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while done() < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"latency run: {n} events were not all processed within {timeout_s:g} s")
        time.sleep(0.05)


def measure_latency(
    run: Run,
    name: str,
    rate: float,
    seconds: float,
    progress: Progress,
    idle_s: float = 0.0,
    app: str | None = None,
    **env: str,
) -> dict[str, Any]:
    """Accepted -> processed at ``rate`` events/s for ``seconds`` (after a warm-up of up to
    1 s), through one API and one worker process (running ``app``, with ``env`` added to
    its environment), and the worker's CPU per event meanwhile. Only the events sent
    here (type BENCH) are waited for and measured: with ``app``, other events may be
    running beside them. With ``idle_s``: then, the API
    stopped and nothing left to do, the commands per second the idle worker sends (INFO
    commandstats of the primaries)."""
    task = progress.add_task(f"{name}: {rate:g} events/s for {seconds:g} s", total=None)
    args = ["worker", *([app] if app else [])]
    worker = spawn(args, run.env(name, **env), run.scratch / f"{name}-worker.log")
    db = run.scratch / name / "events.db"
    out: dict[str, Any] = {}
    try:
        with api_process(run, name) as base:
            warmup = asyncio.run(paced_sender(f"{base}/events", rate, min(1.0, seconds)))
            wait_processed(lambda: processed_rows(db, "BENCH"), len(warmup))
            measured_from_ms = now_ms()
            sent_at = time.perf_counter()
            worker_cpu = cpu_s(worker.pid)
            ids = asyncio.run(paced_sender(f"{base}/events", rate, seconds))
            achieved = len(ids) / max(time.perf_counter() - sent_at, 1e-9)
            wait_processed(lambda: processed_rows(db, "BENCH"), len(warmup) + len(ids))
            worker_cpu = cpu_s(worker.pid) - worker_cpu
        if idle_s:
            progress.update(task, description=f"{name}: idle worker for {idle_s:g} s")
            time.sleep(0.5)  # the last completions written, the API's connections closed
            before = usage(run.nodes)
            time.sleep(idle_s)
            out["idle_commands_per_s"] = rates(run.nodes, before, idle_s)
    finally:
        stop(worker)
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT processed_at_ms - received_at_ms FROM eventstream_events"
            " WHERE type = 'BENCH' AND received_at_ms >= ?",
            (measured_from_ms,),
        ).fetchall()
    values = sorted(float(r[0]) for r in rows)
    progress.update(task, total=1, completed=1)
    out.update(
        offered_per_s=rate,
        achieved_per_s=round(achieved),
        events=len(values),
        p50_ms=percentile(values, 0.5),
        p99_ms=percentile(values, 0.99),
        max_ms=values[-1] if values else float("nan"),
        worker_cpu_us_per_event=round(worker_cpu * 1e6 / max(len(ids), 1), 1),
    )
    return out
