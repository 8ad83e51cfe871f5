"""Dramatiq peer (peers venv only): a no-op actor on the Redis broker.

Worker: ``dramatiq app_dramatiq --processes 1 --threads 8``.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["PEER_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor
def noop(n: int) -> None:
    """The drain workload: do nothing."""


def enqueue(events: int) -> None:
    """Dramatiq has no bulk or pipelined enqueue: one ``send`` (one Lua call) per message."""
    for i in range(events):
        noop.send(i)
