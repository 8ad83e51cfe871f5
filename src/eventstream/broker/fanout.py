"""A deployment's partitions, and one pipeline over several of them.

Every transition is one script inside one partition; what concerns the whole
deployment is one command (or script) per partition, queued on one pipeline and
sent in one round trip per node: on a Redis Cluster, redis-py sends a pipeline's
commands to their nodes side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from eventstream.broker.keys import Keys
from eventstream.broker.reads import StateReads
from eventstream.broker.scripts import Scripts


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its keys, its scripts and the reads of its state."""

    index: int
    keys: Keys
    scripts: Scripts
    reads: StateReads


def _raise_errors(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


class FanOut:
    """Queues commands for several partitions on one pipeline (see ``__call__``)."""

    def __init__(self, redis: Redis | RedisCluster, partitions: Sequence[Partition]) -> None:
        self.client: Any = redis  # decodes to str, which redis-py's annotations cannot express
        self.partitions = tuple(partitions)
        self.cluster = isinstance(redis, RedisCluster)

    def node_of(self, partition: Partition) -> Any:
        """The cluster node that serves a partition now (cluster only)."""
        return self.client.get_node_from_key(partition.keys.stream)

    async def __call__(
        self,
        queue: Callable[[Any, Partition], Awaitable[Any] | None],
        *,
        atomic: bool = False,
        parts: Sequence[Partition] | None = None,
    ) -> list[list[Any]]:
        """Per partition (all, or ``parts``), the replies of the commands ``queue`` adds to
        a pipeline, in one round trip per node; errors are returned in place.

        ``atomic``: each partition's commands run in one MULTI, so they read one instant
        of that partition (on one server, one MULTI holds them all)."""
        parts = self.partitions if parts is None else parts
        if self.cluster and atomic and len(parts) > 1:
            # a MULTI must stay in one slot: one per partition, side by side
            each = await gather([self(queue, atomic=True, parts=[p]) for p in parts])
            return [replies for [replies] in each]
        sizes: list[int] = []
        async with self.client.pipeline(transaction=atomic) as pipe:
            for part in parts:
                before = len(pipe)
                queued = queue(pipe, part)
                # a script call is a coroutine; a command returns the pipeline itself, and
                # awaiting a cluster pipeline would reset it
                if asyncio.iscoroutine(queued):
                    await queued
                sizes.append(len(pipe) - before)
            replies = list(await pipe.execute(raise_on_error=False)) if len(pipe) else []
        out, at = [], 0
        for size in sizes:
            out.append(replies[at : at + size])
            at += size
        return out


def raise_errors(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


async def gather(calls: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*calls))
