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


Tail = Callable[[Any, Any], None]  # (pipeline, its cluster node or None): queues the tail


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
        replies, _ = await self.run(queue, atomic=atomic, parts=parts)
        return replies

    async def run(
        self,
        queue: Callable[[Any, Partition], Awaitable[Any] | None],
        *,
        atomic: bool = False,
        parts: Sequence[Partition] | None = None,
        tail: Tail | None = None,
    ) -> tuple[list[list[Any]], list[tuple[list[int], list[Any]]]]:
        """``__call__``, and ``tail`` queued at the end of each pipeline: one pipeline on
        one server, one per node on a cluster. Returns the partitions' replies, and per
        pipeline (the indexes in ``parts`` it carried, the tail's replies).

        On a cluster the pipelines run side by side, and a node that fails (down, failing
        over) fails only its own partitions' commands: their replies are its error."""
        parts = list(self.partitions if parts is None else parts)
        if self.cluster and atomic and len(parts) > 1:
            # a MULTI must stay in one slot: one per partition, side by side
            each = await gather([self.run(queue, atomic=True, parts=[p]) for p in parts])
            return [replies for [replies], _ in each], []
        groups = self._by_node(parts)
        done = await gather(
            [self._pipeline(queue, [parts[i] for i in g], atomic, tail, node) for node, g in groups]
        )
        replies: list[list[Any]] = [[] for _ in parts]
        tails: list[tuple[list[int], list[Any]]] = []
        for (_, indexes), (own, tail_replies) in zip(groups, done, strict=True):
            for i, r in zip(indexes, own, strict=True):
                replies[i] = r
            tails.append((indexes, tail_replies))
        return replies, tails

    def _by_node(self, parts: Sequence[Partition]) -> list[tuple[Any, list[int]]]:
        """(node, indexes of ``parts``) per cluster node; one group (node None) on one server."""
        if not self.cluster:
            return [(None, list(range(len(parts))))]
        groups: dict[str, tuple[Any, list[int]]] = {}
        try:
            for i, part in enumerate(parts):
                node = self.node_of(part)
                groups.setdefault(node.name, (node, []))[1].append(i)
        except Exception:  # no slot map yet: one pipeline, which redis-py routes
            return [(None, list(range(len(parts))))]
        return list(groups.values())

    async def _pipeline(
        self,
        queue: Callable[[Any, Partition], Awaitable[Any] | None],
        parts: Sequence[Partition],
        atomic: bool,
        tail: Tail | None,
        node: Any,
    ) -> tuple[list[list[Any]], list[Any]]:
        sizes: list[int] = []
        queued_total = 0
        try:
            async with self.client.pipeline(transaction=atomic) as pipe:
                for part in parts:
                    before = len(pipe)
                    queued = queue(pipe, part)
                    # a script call is a coroutine; a command returns the pipeline itself,
                    # and awaiting a cluster pipeline would reset it
                    if asyncio.iscoroutine(queued):
                        await queued
                    sizes.append(len(pipe) - before)
                if tail is not None:
                    tail(pipe, node)
                queued_total = len(pipe)
                replies = list(await pipe.execute(raise_on_error=False)) if queued_total else []
        except Exception as exc:
            if not self.cluster or not queued_total:
                raise
            # redis-py raises a node's failure out of the whole pipeline: here the
            # pipeline is that node's alone, and the failure is its commands' reply
            replies = [exc] * queued_total
        out, at = [], 0
        for size in sizes:
            out.append(replies[at : at + size])
            at += size
        return out, replies[at:]


def raise_errors(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


async def gather(calls: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*calls))
