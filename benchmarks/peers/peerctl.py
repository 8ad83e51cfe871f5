"""Helper run with the peers venv's python: library versions, enqueueing, INCR cost.

    python peerctl.py versions
    python peerctl.py enqueue dramatiq|arq|rq|celery N
    python peerctl.py incr-cost [COUNT]

Each prints one JSON object on stdout. PEER_REDIS_URL names the peer's private server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import sys
import time
from importlib import metadata

DISTRIBUTIONS = ("dramatiq", "arq", "rq", "celery", "kombu", "redis", "hiredis")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def enqueue(peer: str, events: int) -> dict[str, float]:
    app = importlib.import_module(f"app_{peer}")
    start = time.perf_counter()
    app.enqueue(events)
    return {"seconds": time.perf_counter() - start}


def incr_cost(count: int) -> dict[str, float]:
    """Microseconds per sequential INCR round trip, as the Celery task does it."""
    from redis import Redis

    client = Redis.from_url(os.environ["PEER_REDIS_URL"])
    client.ping()
    start = time.perf_counter()
    for _ in range(count):
        client.incr("peers:incr-cost")
    elapsed = time.perf_counter() - start
    client.delete("peers:incr-cost")
    client.close()
    return {"us_per_incr": elapsed / count * 1e6}


def main(argv: list[str]) -> None:
    match argv:
        case ["versions"]:
            out: dict[str, object] = dict(versions())
        case ["enqueue", peer, events]:
            out = dict(enqueue(peer, int(events)))
        case ["incr-cost", *rest]:
            out = dict(incr_cost(int(rest[0]) if rest else 20_000))
        case _:
            raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
