"""Memory under steady load: does Redis stay flat?

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--rate 1000]

Starts a private Redis, one API and one worker (the real processes), offers a steady
load of events (half of them with an Idempotency-Key, which Redis keeps for the
dedupe window — set short here, 60 s, so the test sees keys expire as they would
in production), and samples Redis memory every 10 s: used_memory, the deployment's
keys, and its dedupe records (all, the live ones, and the bytes their hashes take per
live record). Prints the samples and the growth between the first and the last minute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.__main__ import RESULTS
from benchmarks.harness import Run, api_process, paced_sender, spawn, stop
from benchmarks.memory import dedupe_usage, key_bytes
from eventstream.broker import Keys, connect
from eventstream.embedded import EmbeddedRedis


async def sample(run: Run, name: str) -> dict[str, int]:
    settings = run.settings(name)
    redis = await connect(settings.redis_url or "")
    keys = Keys(settings.prefix)
    try:
        info = await redis.info("memory")
        count, kept = await key_bytes(redis, keys)
        dedupe = await dedupe_usage(redis, keys)
    finally:
        await redis.aclose()
    return {"used_memory": int(info["used_memory"]), "keys": count, "key_bytes": kept,
            **{f"dedupe_{k}": v for k, v in dedupe.items()}}  # fmt: skip


async def load(base: str, rate: float, seconds: float, run: Run, name: str) -> list[dict[str, float]]:
    """Offer `rate` events/s in 10-second rounds (half with an Idempotency-Key), sampling between."""
    samples: list[dict[str, float]] = []
    start = time.perf_counter()
    sent = 0
    rounds = max(1, round(seconds / 10))
    for r in range(rounds + 1):
        figures = await sample(run, name)
        elapsed = time.perf_counter() - start
        samples.append({"t_s": round(elapsed), **figures,
                        "achieved_per_s": round(sent / elapsed) if elapsed > 0 else 0})  # fmt: skip
        if r == rounds:
            break
        ids = await paced_sender(f"{base}/events", rate, 10.0, key_prefix=f"r{r}-")
        sent += len(ids)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    name = "soak"
    with tempfile.TemporaryDirectory(prefix="eventstream-soak-") as tmp:
        scratch = Path(tmp)
        with EmbeddedRedis(scratch / "redis") as server:
            run = Run(server.url, scratch)
            env = run.env(name, EVENTSTREAM_DEDUPE_WINDOW="60")
            worker = spawn(["worker"], env, scratch / "worker.log")
            try:
                with api_process(run, name, EVENTSTREAM_DEDUPE_WINDOW="60") as base:
                    samples = asyncio.run(load(base, args.rate, args.minutes * 60, run, name))
            finally:
                stop(worker)
    table = Table(title=f"Redis memory under {args.rate:g} events/s for {args.minutes:g} min")
    for column in ("t (s)", "used_memory", "keys", "bytes in keys", "dedupe records (live)",
                   "dedupe bytes per live record", "events/s so far"):  # fmt: skip
        table.add_column(column, justify="right")
    for s in samples:
        per_live = s["dedupe_bytes"] / s["dedupe_live"] if s["dedupe_live"] else 0
        table.add_row(str(s["t_s"]), f"{s['used_memory']:,}", str(s["keys"]), f"{s['key_bytes']:,}",
                      f"{s['dedupe_records']:,} ({s['dedupe_live']:,})", f"{per_live:.0f}",
                      str(s["achieved_per_s"]))  # fmt: skip
    console = Console()
    console.print(table)
    first = [s for s in samples if 60 <= s["t_s"] < 120]
    last = samples[-6:]
    if first and last:
        growth = sum(s["used_memory"] for s in last) / len(last) - sum(s["used_memory"] for s in first) / len(
            first
        )
        console.print(f"used_memory, mean of the last minute minus the second minute: {growth:+,.0f} B")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"rate": args.rate, "minutes": args.minutes, "samples": samples}, indent=2)
    )


if __name__ == "__main__":
    main()
