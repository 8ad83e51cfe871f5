"""What ingest waits for before it answers: replicas (WAIT) or AOF fsyncs (WAITAOF).

The wait is queued on the pipeline that carries the ingest scripts, after them, on
each connection that wrote: WAIT covers the writes of its own connection only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from eventstream.broker.fanout import Tail
from eventstream.errors import Unconfirmed


@dataclass(frozen=True, slots=True)
class Durability:
    """What ingest waits for before it answers (EVENTSTREAM_REDIS_WAIT_*): ``replicas``
    replicas that hold the write (WAIT), or with ``aof`` the primary's and that many
    replicas' append-only files fsynced (WAITAOF), at most ``timeout_ms``."""

    replicas: int
    timeout_ms: int
    aof: bool = False


def wait_tail(d: Durability) -> Tail:
    """The WAIT (or WAITAOF) to queue after a pipeline's writes, on its connection: WAIT
    covers the writes of its own connection only (on a cluster, sent to the pipeline's
    node by name: a command with no key would go to any node)."""
    args = ("WAITAOF", 1, d.replicas, d.timeout_ms) if d.aof else ("WAIT", d.replicas, d.timeout_ms)

    def tail(pipe: Any, node: Any) -> None:
        if node is None:
            pipe.execute_command(*args)
        else:
            pipe.execute_command(*args, target_nodes=node)

    return tail


def check_confirmed(d: Durability, replies: Sequence[Any], results: list[Any]) -> None:
    short: list[str] = []
    for reply in replies:
        if isinstance(reply, ResponseError):  # the server cannot confirm at all
            if "unknown command" in str(reply).lower():
                why = "this Redis has no WAITAOF (Redis >= 7.2, Valkey >= 8.0 have it)"
            else:  # e.g. WAITAOF with appendonly off
                why = f"Redis refused to confirm it: {reply}"
            raise Unconfirmed(
                f"{why}. The events were queued, but their durability cannot be confirmed: "
                f"check EVENTSTREAM_REDIS_WAIT_{'AOF' if d.aof else 'REPLICAS'} against the server",
                results,
            )
        if isinstance(reply, Exception):
            raise reply
        if d.aof:
            local, replicas = (int(x) for x in reply)
            if local < 1:
                short.append("the primary's own AOF fsync")
            if replicas < d.replicas:
                short.append(f"{replicas} of {d.replicas} replica AOF fsync(s)")
        elif int(reply) < d.replicas:
            short.append(f"{int(reply)} of {d.replicas} replica(s)")
    if short:
        what = "only " + ", ".join(sorted(set(short)))
        raise Unconfirmed(
            f"queued, but {what} confirmed the write within {d.timeout_ms} ms "
            f"(EVENTSTREAM_REDIS_WAIT_{'AOF' if d.aof else 'REPLICAS'}): a failover now could "
            "lose it. Retry with the same Idempotency-Key (or id): once confirmed the answer is "
            "a duplicate; without a key a retry queues the event again",
            results,
        )
