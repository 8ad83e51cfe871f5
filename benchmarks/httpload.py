"""The load generator the suite's ingest figures come from: wrk, keeping 32 keep-alive
connections busy for a number of seconds.

wrk is Debian's ``wrk`` package: when it is missing and the suite runs as root with
apt-get, it is installed first (``ensure_wrk``). Without it there are no ingest figures:
a Python load generator saturates long before the API does (it measured about 220
requests/s where wrk measured 7,000), so its figure would be the generator's, not
EventStream's. Only ``--quick`` (which checks that the harness runs, not how fast)
neither installs wrk nor needs it: without it, it falls back to that generator."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.harness import Run, percentile

CONNECTIONS = 32


NO_WRK = (
    "wrk is not installed, so no ingest figure was measured (a Python load generator "
    "would measure itself): apt-get install wrk, brew install wrk, or run as root with apt-get"
)


class NoLoadGenerator(RuntimeError):
    """wrk is missing (and this is not a --quick run)."""


@functools.cache
def ensure_wrk() -> str | None:
    """wrk's path; installed from Debian's package first when it is missing and this
    runs as root with apt-get. None when it is still missing."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o",
                   "DPkg::Lock::Timeout=300", "wrk"]  # fmt: skip
        for attempt in ([install], [["apt-get", "update", "-q"], install]):
            if all(subprocess.run(cmd, env=env, capture_output=True).returncode == 0 for cmd in attempt):
                break
        path = shutil.which("wrk")
    return path


def has_wrk(quick: bool) -> bool:
    """Whether wrk is there; a --quick run never installs it."""
    return bool(shutil.which("wrk") if quick else ensure_wrk())


def generator(quick: bool = False) -> str:
    """What ``load`` runs, as the tables name it."""
    if has_wrk(quick):
        return "wrk -t2 -c32"
    return "python httpx, 32 connections (--quick only)" if quick else "not measured: wrk is missing"


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
    m = re.search(r"(\d+) requests in", text)
    if m:
        out["requests"] = float(m.group(1))
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
    """The stand-in for wrk in --quick runs (it is the bottleneck: never a figure)."""
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
        "requests": float(len(latencies)),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": float(errors),
    }


def load(run: Run, url: str, body: str, seconds: float) -> dict[str, float]:
    """wrk's figures for ``seconds`` of POSTs of ``body``; in a --quick run without wrk,
    the Python stand-in's. Raises NoLoadGenerator when wrk is missing otherwise."""
    if has_wrk(run.quick):
        return wrk(url, body, seconds, CONNECTIONS, run.scratch)
    if run.quick:
        return asyncio.run(python_load(url, body, seconds, CONNECTIONS))
    raise NoLoadGenerator(NO_WRK)


def busy_s(figures: dict[str, float], seconds: float) -> float:
    """How long a load run lasted by the generator's own clock (its requests over its
    rate), else the ``seconds`` it was asked for."""
    if figures.get("rps") and figures.get("requests"):
        return figures["requests"] / figures["rps"]
    return seconds
