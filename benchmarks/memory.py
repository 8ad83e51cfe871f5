"""Redis memory per event: queued, idempotency keys, parked behind an ordering key, and
after a full drain.

    .venv/bin/python -m benchmarks.memory [--events N] [--payload-bytes B]

Starts its own private server, enqueues N events through the real ingest script,
drains them with a real worker (SQLite store in a temp dir) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from eventstream.app import default_app
from eventstream.broker import Broker, Keys, connect
from eventstream.embedded import EmbeddedRedis
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.settings import Settings
from eventstream.store import create_store
from eventstream.worker import Worker


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def key_bytes(redis: Redis, keys: Keys) -> tuple[int, int]:
    """(number of keys, their MEMORY USAGE sum) under the deployment's prefix."""
    count = total = 0
    cursor = 0
    while True:  # one pipelined MEMORY USAGE round trip per SCAN page: tens of thousands of keys are fine
        cursor, names = await redis.scan(cursor, match=f"{keys.tag}:*", count=1000)
        if names:
            pipe = redis.pipeline(transaction=False)
            for name in names:
                pipe.memory_usage(name)
            count += len(names)
            total += sum(int(n or 0) for n in await pipe.execute())
        if cursor == 0:
            return count, total


async def dedupe_usage(redis: Redis, keys: Keys) -> dict[str, int]:
    """The dedupe hashes of a deployment (one partition): how many, their records, the
    records live on the server's clock, and their MEMORY USAGE sum."""
    r: Any = redis
    seconds, micros = await r.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    out = {"hashes": 0, "records": 0, "live": 0, "bytes": 0}
    async for name in r.scan_iter(match=f"{keys.tag}:dedupe:*", count=1000):
        records: dict[bytes, bytes] = await r.execute_command("HGETALL", name, NEVER_DECODE=True)
        out["hashes"] += 1
        out["records"] += len(records)
        out["live"] += sum(int.from_bytes(v[:6], "big") > now for v in records.values())
        out["bytes"] += int(await r.memory_usage(name, samples=0) or 0)
    return out


async def measure(url: str, data_dir: Path, events: int, payload_bytes: int) -> list[tuple[str, str]]:
    settings = Settings(redis_url=url, data_dir=data_dir, prefix="bench", log_level="warning")
    redis = await connect(url)
    broker = Broker(redis, Keys(settings.prefix))
    await broker.ensure_group()
    store = create_store(settings.store_url)
    await store.create_schema()
    payload = {"blob": "x" * payload_bytes}
    rows: list[tuple[str, str]] = []

    base = await used_memory(redis)
    for start in range(0, events, 500):
        items = [
            to_envelope(IncomingEvent(type="BENCH", payload=payload), None, now_ms())
            for _ in range(min(500, events - start))
        ]
        await enqueue(broker, items, 86_400_000)
    queued = await used_memory(redis)
    rows.append(("used_memory before (the server's other data included)", f"{base:,} B"))
    rows.append((f"{events:,} queued events, {payload_bytes} B payload: growth", f"{queued - base:,} B"))
    rows.append(("per queued event", f"{(queued - base) / events:,.0f} B"))

    await Worker(default_app(), settings, broker, store).run(burst=True)
    drained = await used_memory(redis)
    rows.append(("after the drain: used_memory vs before", f"{drained - base:+,} B"))
    keys, kept = await key_bytes(redis, broker.keys)
    rows.append((f"after the drain: what the {keys} keys hold (MEMORY USAGE)", f"{kept:,} B"))

    before_keys = await used_memory(redis)
    for start in range(0, events, 500):
        items = [
            to_envelope(IncomingEvent(type="BENCH", payload={}), f"key-{start + i}", now_ms())
            for i in range(min(500, events - start))
        ]
        await enqueue(broker, items, 86_400_000)
    await Worker(default_app(), settings, broker, store).run(burst=True)
    after_keys = await used_memory(redis)
    rows.append(
        ("per idempotency key kept for the dedupe window", f"{(after_keys - before_keys) / events:,.0f} B")
    )

    # The same events with ordering keys, 100 per key: all but each key's first wait parked.
    keys_n = max(1, events // 100)
    before_order = await used_memory(redis)
    for start in range(0, events, 500):
        items = [
            to_envelope(
                IncomingEvent(type="BENCH", payload=payload, orderingKey=f"key-{(start + i) % keys_n}"),
                None,
                now_ms(),
            )
            for i in range(min(500, events - start))
        ]
        await enqueue(broker, items, 86_400_000)
    parked = await used_memory(redis)
    rows.append(
        (
            f"{events:,} events over {keys_n:,} ordering keys ({events - keys_n:,} parked), "
            f"{payload_bytes} B payload: per event",
            f"{(parked - before_order) / events:,.0f} B",
        )
    )
    await Worker(default_app(), settings, broker, store).run(burst=True)
    rows.append(
        ("after their drain: used_memory vs before them", f"{await used_memory(redis) - before_order:+,} B")
    )
    await store.close()
    await redis.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--payload-bytes", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        rows = asyncio.run(measure(server.url, Path(tmp), args.events, args.payload_bytes))
    table = Table(title="Redis memory (used_memory)")
    table.add_column("what")
    table.add_column("bytes", justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
