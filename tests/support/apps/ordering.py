"""Handlers for the per-key ordering tests (tests/e2e/test_ordering.py), run by REAL
worker processes: ``python -m eventstream worker tests.support.apps.ordering:app``.

Every try writes a ``start`` line when it begins and an ``end`` line when it returns or
raises, to the file named by ``E2E_RUNS_FILE`` (one JSON object a line, each appended
with one O_APPEND write: atomic across processes). A try killed with SIGKILL leaves a
``start`` and no ``end``. Read them back with :func:`runs`.

What a try does is in the event's payload, so that one handler serves every test:

- ``ms``: sleep a random time between ``ms``/2 and ``ms`` milliseconds, or, with the
  probability ``slow``, ``slow_ms`` milliseconds (the start line says how long);
- ``fail``: the probability that the try raises (and is retried);
- ``gate``: a file to wait for before going on;
- ``refuse_unless``: a file whose absence makes the try raise PermanentError;
- ``fail_unless``: a file whose absence makes the try raise (and be retried).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eventstream import Event, EventStream, PermanentError

RUNS_FILE_ENV = "E2E_RUNS_FILE"

app = EventStream("ordering")


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get(RUNS_FILE_ENV)
    if not path:
        return
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def _step(event: Event) -> None:
    """One try as the payload says, between a start and an end line."""
    p = event.payload
    common = {"id": event.id, "key": event.ordering_key, "seq": int(p.get("seq", -1)), "type": event.type}
    common |= {"attempt": event.attempt, "pid": os.getpid()}
    rx = int(event.received_at.timestamp() * 1000)
    pause_s = random.uniform(0.5, 1.0) * float(p.get("ms", 0)) / 1000
    if random.random() < float(p.get("slow", 0)):
        pause_s = float(p["slow_ms"]) / 1000
    _write({"edge": "start", **common, "t": time.time(), "rx": rx, "sleep": pause_s})
    outcome = "error"
    try:
        if gate := p.get("gate"):
            while not await asyncio.to_thread(Path(gate).exists):  # noqa: ASYNC110 - the test makes it
                await asyncio.sleep(0.01)
        if pause_s:
            await asyncio.sleep(pause_s)
        if (until := p.get("refuse_unless")) and not await asyncio.to_thread(Path(until).exists):
            outcome = "refused"
            raise PermanentError(f"refused until {until} exists")
        if random.random() < float(p.get("fail", 0)):
            outcome = "failed"
            raise ConnectionError(f"a random failure of try {event.attempt}")
        if (cure := p.get("fail_unless")) and not await asyncio.to_thread(Path(cure).exists):
            outcome = "failed"
            raise RuntimeError(f"fails until {cure} exists")
        outcome = "ok"
    finally:
        _write({"edge": "end", **common, "t": time.time(), "outcome": outcome})


@app.handler("ORDERED", max_attempts=50)
async def ordered(event: Event) -> None:
    """Strict order (key_concurrency 1); a random failure is retried, up to 50 tries."""
    await _step(event)


@app.handler("POISON", max_attempts=3)
async def poison(event: Event) -> None:
    """Meant for events that fail every try (payload ``fail_unless``): dead after 3 tries."""
    await _step(event)


@app.handler("FANOUT", key_concurrency=3)
async def fanout(event: Event) -> None:
    """Up to three events of one key at once."""
    await _step(event)


@dataclass(frozen=True)
class Run:
    """One try of one event, as the handler recorded it; ``end`` is None while it runs
    (or when its process was killed)."""

    event_id: str
    key: str | None
    seq: int  # the payload's, -1 when none
    type: str
    attempt: int
    pid: int
    start: float  # time.time()
    received_ms: int
    sleep_s: float
    end: float | None = None
    outcome: str | None = None


def runs(path: Path, last_bytes: int | None = None) -> list[Run]:
    """Every try recorded in ``path``, in the order they started; with ``last_bytes``,
    only the tries that started in that many bytes at the end of the file (a cheap look
    at what runs now)."""
    if not path.exists():
        return []
    with path.open("rb") as f:
        if last_bytes is not None:
            f.seek(max(0, path.stat().st_size - last_bytes))
        text = f.read().decode(errors="replace")
    lines = text[: text.rfind("\n") + 1].splitlines()  # not a line still being written
    if last_bytes is not None and lines:
        lines = lines[1:]  # it may be the end of a line cut
    done: list[Run] = []
    running: dict[tuple[str, int, int], list[Run]] = {}  # (event, attempt, pid) -> tries not ended
    for line in lines:
        r = json.loads(line)
        ident = (r["id"], r["attempt"], r["pid"])
        if r["edge"] == "start":
            run = Run(
                r["id"], r["key"], r["seq"], r["type"], r["attempt"], r["pid"], r["t"], r["rx"], r["sleep"]
            )
            running.setdefault(ident, []).append(run)
        elif running.get(ident):
            done.append(replace(running[ident].pop(0), end=r["t"], outcome=r["outcome"]))
        else:
            assert last_bytes is not None, f"a try of {ident} ended without a start"
    done += [run for left in running.values() for run in left]
    return sorted(done, key=lambda r: r.start)
