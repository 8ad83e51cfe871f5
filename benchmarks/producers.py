"""What the producers carry (`python -m benchmarks --producers [--events N]`), in events/s,
each beside the raw HTTP request it makes, in the same run, against one API process on
the suite's private Redis, with no worker (as the suite's ingest figures):

- ``Client.send``, one at a time over keep-alive, beside httpx posting the same request
  (``POST /events`` with an ``Idempotency-Key``) from one connection;
- ``AsyncClient.send`` from 4 and from 32 tasks on one client, beside httpx from as many
  tasks on one ``httpx.AsyncClient`` (whose pool slows down with many: encode/httpx#3215);
- ``Client.send_batch`` with lists of 100 and of 1,000, beside httpx posting the same
  batches (items with an ``id``) one at a time;
- the background mode: ``Client.enqueue`` of the events (the default options: batches
  of 1,000, a buffer of 10,000 that blocks when full), timed to the return of ``flush()``,
  beside the batches of 1,000;
- ``app.publish`` in process, one at a time, and ``app.publish_sync``, beside httpx
  posting the same events without a key (publish makes none) from one connection;
- ``app.publish`` from 32 tasks, beside the suite's own ingest figure (the same events
  from 32 connections by wrk, which the run needs: see benchmarks/httpload.py);
- and the suite's batch ingest figure (batches of 100 from 32 connections), for the
  ceiling of HTTP ingest on this machine.

The single-event figures send N events each (``--events``), the batch ones 10 x N. Each
figure starts on an empty stream (the previous figure's events trimmed), after a short
warm-up, and checks that the server counted every event it sent.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from rich.progress import Progress
from rich.table import Table

from benchmarks.harness import Probe, Run, api_process
from benchmarks.httpload import CONNECTIONS, generator, load
from eventstream import AsyncClient, Client, EventStream
from eventstream.broker import Layout, connect

NAME = "producers"
BATCH_FACTOR = 10  # the batch figures send this many times --events
FEW = 4  # tasks of the smaller concurrent figure: httpx's async pool slows down with many
WARMUP = 64  # untimed events before each single-event figure (one batch before a batch one):
# enough for every one of the 32 tasks to open its connection


def event(n: int) -> dict[str, Any]:
    """The suite's ingest event, numbered."""
    return {"type": "BENCH", "payload": {"user": "khushi", "n": n}}


@dataclass(frozen=True)
class Figure:
    """One row: ``measure(base_url, events)`` sends the events and returns the seconds it
    timed (the warm-up left out) and how many it sent untimed; ``baseline`` names the
    raw HTTP figure it is compared with."""

    name: str
    label: str
    measure: Callable[[str, int], tuple[float, int]]
    baseline: str | None = None
    batch: bool = False


class Stopwatch:
    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def counted(numbers: Iterator[int], count: int) -> Iterator[int]:
    """The next ``count`` event numbers."""
    return (next(numbers) for _ in range(count))


async def in_tasks(events: int, send: Callable[[int], Awaitable[object]], tasks: int) -> None:
    """``send(n)`` for n in 0..events-1, from ``tasks`` tasks, each awaiting its own."""
    numbers = iter(range(events))

    async def task() -> None:
        for n in numbers:
            await send(n)

    await asyncio.gather(*(task() for _ in range(tasks)))


def checked(response: httpx.Response) -> None:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")


# ---- the raw HTTP requests -------------------------------------------------------------


def single(n: int, key: bool) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    return json.dumps(event(n)).encode(), headers


def http_sequential(key: bool) -> Callable[[str, int], tuple[float, int]]:
    def measure(base: str, events: int) -> tuple[float, int]:
        with httpx.Client(base_url=base) as http:

            def send(n: int) -> None:
                body, headers = single(n, key)
                checked(http.post("/events", content=body, headers=headers))

            for n in range(WARMUP):
                send(n)
            with Stopwatch() as watch:
                for n in range(events):
                    send(n)
        return watch.seconds, WARMUP

    return measure


def http_tasks(key: bool, tasks: int) -> Callable[[str, int], tuple[float, int]]:
    async def run(base: str, events: int) -> float:
        limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
        async with httpx.AsyncClient(base_url=base, limits=limits) as http:

            async def send(n: int) -> None:
                body, headers = single(n, key)
                checked(await http.post("/events", content=body, headers=headers))

            await in_tasks(WARMUP, send, tasks)
            with Stopwatch() as watch:
                await in_tasks(events, send, tasks)
        return watch.seconds

    return lambda base, events: (asyncio.run(run(base, events)), WARMUP)


def http_batches(size: int) -> Callable[[str, int], tuple[float, int]]:
    def body(numbers: Iterator[int], count: int) -> bytes:
        items = [{**event(n), "id": str(uuid.uuid4())} for n in counted(numbers, count)]
        return json.dumps({"events": items}).encode()

    def measure(base: str, events: int) -> tuple[float, int]:
        headers = {"Content-Type": "application/json"}
        numbers = iter(range(events + size))
        with httpx.Client(base_url=base) as http:
            checked(http.post("/events/batch", content=body(numbers, size), headers=headers))
            with Stopwatch() as watch:
                for start in range(0, events, size):
                    count = min(size, events - start)
                    checked(http.post("/events/batch", content=body(numbers, count), headers=headers))
        return watch.seconds, size

    return measure


# ---- the producers ---------------------------------------------------------------------


def client_send(base: str, events: int) -> tuple[float, int]:
    with Client(base) as client:
        for n in range(WARMUP):
            client.send("BENCH", event(n)["payload"])
        with Stopwatch() as watch:
            for n in range(events):
                client.send("BENCH", event(n)["payload"])
    return watch.seconds, WARMUP


def async_send(tasks: int) -> Callable[[str, int], tuple[float, int]]:
    async def run(base: str, events: int) -> float:
        async with AsyncClient(base) as client:

            async def send(n: int) -> None:
                await client.send("BENCH", event(n)["payload"])

            await in_tasks(WARMUP, send, tasks)
            with Stopwatch() as watch:
                await in_tasks(events, send, tasks)
        return watch.seconds

    return lambda base, events: (asyncio.run(run(base, events)), WARMUP)


def send_batch(size: int) -> Callable[[str, int], tuple[float, int]]:
    def measure(base: str, events: int) -> tuple[float, int]:
        with Client(base) as client:
            client.send_batch([event(n) for n in range(size)])
            with Stopwatch() as watch:
                for start in range(0, events, size):
                    batch = [event(n) for n in range(start, min(start + size, events))]
                    client.send_batch(batch)
        return watch.seconds, size

    return measure


def background(base: str, events: int) -> tuple[float, int]:
    with Client(base) as client:
        client.enqueue("BENCH", event(0)["payload"])
        client.flush()
        with Stopwatch() as watch:
            for n in range(events):
                client.enqueue("BENCH", event(n)["payload"])
            client.flush()
        if client.background_stats().failed:
            raise RuntimeError(f"background: {client.background_stats()}")
    return watch.seconds, 1


def publishing(app: EventStream, tasks: bool) -> Callable[[str, int], tuple[float, int]]:
    async def run(events: int) -> float:
        async def send(n: int) -> None:
            await app.publish("BENCH", event(n)["payload"])

        async def sequential(count: int) -> None:
            for n in range(count):
                await send(n)

        go = (lambda count: in_tasks(count, send, CONNECTIONS)) if tasks else sequential
        await go(WARMUP)
        with Stopwatch() as watch:
            await go(events)
        await app.aclose_publisher()
        return watch.seconds

    return lambda base, events: (asyncio.run(run(events)), WARMUP)


def publishing_sync(app: EventStream) -> Callable[[str, int], tuple[float, int]]:
    def measure(base: str, events: int) -> tuple[float, int]:
        for n in range(WARMUP):
            app.publish_sync("BENCH", event(n)["payload"])
        with Stopwatch() as watch:
            for n in range(events):
                app.publish_sync("BENCH", event(n)["payload"])
        app.close_publisher()
        return watch.seconds, WARMUP

    return measure


def figures(app: EventStream) -> list[Figure]:
    """Each baseline before the producers compared with it (but the suite's figures, last)."""
    one, few, many = "one at a time", f"{FEW} tasks", f"{CONNECTIONS} tasks"
    b100, b1000 = "http_batch_100", "http_batch_1000"
    return [
        Figure("http_key", f"POST /events, key, {one}", http_sequential(True)),
        Figure("client_send", f"Client.send, {one}", client_send, "http_key"),
        Figure("http_key_4", f"POST /events, key, {few}", http_tasks(True, FEW)),
        Figure("async_send_4", f"AsyncClient.send, {few}", async_send(FEW), "http_key_4"),
        Figure("http_key_32", f"POST /events, key, {many}", http_tasks(True, CONNECTIONS)),
        Figure("async_send_32", f"AsyncClient.send, {many}", async_send(CONNECTIONS), "http_key_32"),
        Figure(b100, "POST /events/batch of 100", http_batches(100), batch=True),
        Figure("send_batch_100", "Client.send_batch of 100", send_batch(100), b100, True),
        Figure(b1000, "POST /events/batch of 1,000", http_batches(1000), batch=True),
        Figure("send_batch_1000", "Client.send_batch of 1,000", send_batch(1000), b1000, True),
        Figure("background", "Client.enqueue, then flush()", background, b1000, True),
        Figure("http", f"POST /events, no key, {one}", http_sequential(False)),
        Figure("publish", f"app.publish, {one}", publishing(app, False), "http"),
        Figure("publish_sync", f"app.publish_sync, {one}", publishing_sync(app), "http"),
        Figure("publish_32", f"app.publish, {many}", publishing(app, True), "suite_ingest"),
    ]


async def trim(run: Run) -> None:
    """Empty the deployment's streams (no worker reads them), so each figure starts on an
    empty server."""
    redis = await connect(run.url)
    try:
        for keys in Layout(NAME, run.partitions).parts:
            await redis.xtrim(keys.stream, maxlen=0)
    finally:
        await redis.aclose()


def bench_producers(run: Run, events: int, seconds: float, progress: Progress) -> None:
    app = EventStream("bench-producers")
    app.configure_publisher(run.settings(NAME))
    rows: dict[str, dict[str, Any]] = {}
    plan = figures(app)
    suite = {
        "suite_ingest": ("/events", event(1), 1),
        "suite_batch_100": ("/events/batch", {"events": [event(n) for n in range(100)]}, 100),
    }
    task = progress.add_task("producers", total=len(plan) + 2)
    with api_process(run, NAME) as base, Probe(run.settings(NAME)) as probe:
        for figure in plan:
            progress.update(task, description=f"producers: {figure.label}")
            asyncio.run(trim(run))
            sent = events * (BATCH_FACTOR if figure.batch else 1)
            received = probe.counter("received")
            elapsed, untimed = figure.measure(base, sent)
            received = probe.counter("received") - received
            if received != sent + untimed:
                raise RuntimeError(
                    f"{figure.name}: sent {sent + untimed} events, the server counted {received}"
                )
            rows[figure.name] = {
                "events": sent,
                "seconds": round(elapsed, 3),
                "events_per_s": round(sent / elapsed),
            }
            progress.advance(task)
        for name, (path, body, per_request) in suite.items():
            progress.update(task, description=f"producers: {generator(run.quick)} {path}")
            asyncio.run(trim(run))
            figures_ = load(run, f"{base}{path}", json.dumps(body), seconds)
            rows[name] = {
                "events_per_s": round(figures_.get("rps", 0) * per_request),
                "errors": int(figures_.get("errors", 0)),
                "seconds": seconds,
            }
            progress.advance(task)
    run.figures["producers"] = {
        "events": events,
        "batch_events": events * BATCH_FACTOR,
        "load_generator": generator(run.quick),
        "worker": "none (as the suite's ingest figures)",
        "baselines": {f.name: f.baseline for f in plan if f.baseline},
        "labels": {f.name: f.label for f in plan}
        | {n: f"{generator(run.quick)} POST {p}" for n, (p, _, _) in suite.items()},
        "rows": rows,
    }


def merge(runs: list[Run]) -> dict[str, Any]:
    """The median of each row's events/s over the runs, with their range and each run's
    figure, and each producer's ratio to its baseline's median."""
    first = runs[0].figures["producers"]
    rows: dict[str, dict[str, Any]] = {}
    for name in first["rows"]:
        values = [r.figures["producers"]["rows"][name]["events_per_s"] for r in runs]
        rows[name] = {
            "events_per_s": round(statistics.median(values)),
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
    for name, baseline in first["baselines"].items():
        rows[name]["ratio_to_baseline"] = round(
            rows[name]["events_per_s"] / rows[baseline]["events_per_s"], 3
        )
    return {**first, "rows": rows, "repeats": len(runs)}


def producers_table(merged: dict[str, Any], server: str) -> Table:
    """Each producer beside its raw HTTP request (httpx: one connection, or one
    AsyncClient with 32 tasks; batches one at a time), then the suite's ingest figures."""
    rows, labels = merged["rows"], merged["labels"]
    repeats = merged["repeats"]
    title = "EventStream producers, events/s" + (f" (median of {repeats} runs)" if repeats > 1 else "")
    table = Table(
        title=title,
        caption=f"server: {server}; one API process, no worker; {merged['events']:,} events "
        f"per single-event figure, {merged['batch_events']:,} per batch figure; raw HTTP: httpx "
        "sending the same requests (but the suite's rows); key: an Idempotency-Key per event, "
        "as the clients send",
    )
    table.add_column("producer")
    table.add_column("events/s", justify="right")
    table.add_column("raw HTTP beside it")
    table.add_column("events/s", justify="right")
    table.add_column("ratio", justify="right")

    def rate(row: dict[str, Any]) -> str:
        spread = f"\n({row['min']:,}-{row['max']:,})" if repeats > 1 else ""
        return f"{row['events_per_s']:,}{spread}"

    for name, baseline in merged["baselines"].items():
        row, raw = rows[name], rows[baseline]
        ratio = f"{row['ratio_to_baseline']:.2f}x"
        table.add_row(labels[name], rate(row), labels[baseline], rate(raw), ratio)
    table.add_row("(the suite's batch ingest, 100 per request)", "", labels["suite_batch_100"],
                  rate(rows["suite_batch_100"]), "")  # fmt: skip
    return table
