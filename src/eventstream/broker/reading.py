"""How a worker reads new entries from every partition of a deployment.

One partition: one XREADGROUP that waits (BLOCK) when nothing is queued. Several: a
sweep reads all of them in one round trip, each for a share that follows what it
returned last time, and only when the sweep finds nothing does the read block: on
one server with one XREADGROUP over every partition's stream, on a cluster (where
one command cannot span slots) with one blocking read per partition, kept open
across reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ResponseError

from eventstream.broker.entries import StreamEntry
from eventstream.broker.fanout import FanOut, Partition
from eventstream.broker.keys import GROUP


class Reader:
    """The reads of one broker's consumers (see the module docstring); its weights and
    its open blocking reads are this process's."""

    def __init__(self, fan: FanOut, ensure_group: Callable[[], Awaitable[None]]) -> None:
        self._r: Any = fan.client
        self._fan_out = fan
        self.partitions = fan.partitions
        self._cluster = fan.cluster
        self._ensure_group = ensure_group
        self._turn = 0
        self._weights = [1] * len(self.partitions)  # what each partition's last read returned
        self._idle: set[str] = set()  # consumers whose last wait found nothing
        # consumer -> partition -> its blocking read still open (cluster only; see _wait_each)
        self._waits: dict[str, dict[int, asyncio.Future[list[StreamEntry]]]] = {}

    def _next_turn(self) -> int:
        self._turn = (self._turn + 1) % len(self.partitions)
        return self._turn

    async def read_new(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """Up to ``count`` new entries for ``consumer``, waiting up to ``block_ms`` for one.

        With several partitions, a sweep reads all of them in one round trip, each for a
        share of ``count`` that follows what it returned last time (a partition that filled
        its share gets twice the weight; an idle one is still asked for one at least every
        few sweeps), so no partition is starved and a busy one gets most of the room. Only
        when the sweep finds nothing does the read block, on every partition at once: then
        one entry per partition may come beyond ``count``. While reads keep finding nothing,
        they only block (no sweep): an idle worker sends one read per block_ms on one
        server, one per partition on a cluster."""
        if len(self.partitions) == 1:
            return await self._read_one(consumer, count, block_ms)
        if consumer not in self._idle or block_ms <= 0:
            entries = await self._sweep(consumer, count)
            if entries or block_ms <= 0:
                return entries
        # Nothing found: wait. A blocking XREADGROUP returns at once what is already there,
        # so after a wait that found nothing the next one needs no sweep first.
        if self._cluster:  # a blocking read cannot span slots: wait on each partition
            entries = await self._wait_each(consumer, block_ms)
        else:
            entries = await self._read_all(consumer, max(1, count // len(self.partitions)), block_ms)
        if entries:
            self._idle.discard(consumer)
        else:
            self._idle.add(consumer)
        return entries

    async def _wait_each(self, consumer: str, block_ms: int) -> list[StreamEntry]:
        """One blocking read (COUNT 1) per partition, each on its own connection, kept
        open across calls: this returns as soon as any has an entry, and the others stay
        waiting for the next call (end_reads collects them when the reader stops)."""
        waits = self._waits.setdefault(consumer, {})
        for part in self.partitions:
            if part.index not in waits:
                waits[part.index] = asyncio.ensure_future(self._read_one(consumer, 1, block_ms, part))
        await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
        return self._collect(waits)

    @staticmethod
    def _collect(waits: dict[int, asyncio.Future[list[StreamEntry]]]) -> list[StreamEntry]:
        out: list[StreamEntry] = []
        error: BaseException | None = None
        for index, wait in list(waits.items()):
            if wait.done():
                del waits[index]
                if wait.exception() is not None:
                    error = error or wait.exception()
                else:
                    out += wait.result()
        if error is not None and not out:
            raise error
        return out

    async def end_reads(self, consumer: str) -> list[StreamEntry]:
        """Wait for ``consumer``'s blocking reads still open (on a cluster with several
        partitions) and return what they delivered: entries now pending for the consumer,
        which the caller must run or release. Errors are dropped: nothing was delivered."""
        waits = self._waits.pop(consumer, {})
        if not waits:
            return []
        await asyncio.wait(waits.values())
        return [e for w in waits.values() if w.exception() is None for e in w.result()]

    def _read(self, client: Any, consumer: str, part: Partition, count: int, block_ms: int | None) -> Any:
        """XREADGROUP of one partition's new entries (queued, with a pipeline). On a cluster
        it is sent to the partition's node by name: redis-py cannot find the key of an
        XREADGROUP by itself and would ask the server first (COMMAND GETKEYS, a round trip
        to one node per read)."""
        if not self._cluster:
            return client.xreadgroup(GROUP, consumer, {part.keys.stream: ">"}, count=count, block=block_ms)
        args: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        return client.execute_command(
            *args, "STREAMS", part.keys.stream, ">", target_nodes=self._fan_out.node_of(part)
        )

    async def _read_one(
        self, consumer: str, count: int, block_ms: int, part: Partition | None = None
    ) -> list[StreamEntry]:
        part = part or self.partitions[0]
        try:
            reply = await self._read(self._r, consumer, part, count, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            return []
        if not reply:
            return []
        # decode_responses: [[stream, [(entry, {field: value}), ...]]]
        _, entries = reply[0]
        return [StreamEntry.from_fields(e, f, part.index) for e, f in entries if f]

    def _shares(self, count: int) -> list[int]:
        weights = self._weights
        total = sum(weights)
        shares = [count * w // total for w in weights]
        n, start = len(shares), self._next_turn()
        for i in range(count - sum(shares)):  # fewer than n left: round robin
            shares[(start + i) % n] += 1
        return shares

    async def _sweep(self, consumer: str, count: int) -> list[StreamEntry]:
        shares = self._shares(count)
        asked = [p for p in self.partitions if shares[p.index]]
        replies = await self._fan_out(
            lambda pipe, p: self._read(pipe, consumer, p, shares[p.index], None),
            parts=asked,
        )
        out: list[StreamEntry] = []
        missing = False
        for part, [reply] in zip(asked, replies, strict=True):
            if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
                missing = True
                continue
            if isinstance(reply, Exception):
                raise reply
            got = [StreamEntry.from_fields(e, f, part.index) for e, f in reply[0][1] if f] if reply else []
            full = len(got) >= shares[part.index]
            self._weights[part.index] = min(max(1, len(got) * (2 if full else 1)), 1 << 20)
            out += got
        if missing:
            await self._ensure_group()
        return out

    async def _read_all(self, consumer: str, count: int, block_ms: int) -> list[StreamEntry]:
        """One blocking read over every partition's stream (one server only)."""
        streams = {p.keys.stream: ">" for p in self.partitions}
        index = {p.keys.stream: p.index for p in self.partitions}
        try:
            reply = await self._r.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group()
            return []
        out: list[StreamEntry] = []
        for stream, entries in reply or ():
            p = index[stream]
            got = [StreamEntry.from_fields(e, f, p) for e, f in entries if f]
            self._weights[p] = max(self._weights[p], len(got))
            out += got
        return out
