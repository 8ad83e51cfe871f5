"""The ingest load generators the suite's figures come from: wrk when installed, else a
Python one (httpx, which may be the bottleneck); both keep 32 keep-alive connections
busy for a number of seconds."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.harness import Run, percentile

CONNECTIONS = 32


def generator() -> str:
    """What ``load`` runs, as the tables name it."""
    return "wrk -t2 -c32" if shutil.which("wrk") else "python httpx, 32 connections"


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
        return wrk(url, body, seconds, CONNECTIONS, run.scratch)
    return asyncio.run(python_load(url, body, seconds, CONNECTIONS))
