"""The deployment's metrics history in Redis: one stream, ``{d}:history`` (keys.py), of
samples, one per step of time (eventstream.ops.history decides what a sample holds).

A sample's entry id is ``<step start ms>-0``. XADD refuses an id that is not greater
than the stream's last one, so the first process to write a step wins, and every
other process's write for that step (or an earlier one) is refused and changes
nothing: any number of processes may write, with no lease. Each write trims, in the
same command, the entries older than the span kept (MINID, exact: the stream stays
bounded however many processes write).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from eventstream.backend_errors import REDIS, translated
from eventstream.broker.keys import Keys


@translated(REDIS)  # like Broker: callers see EventStream's errors, never redis-py's
class Samples:
    """The history stream of one deployment (see the module docstring)."""

    def __init__(self, redis: Redis | RedisCluster, keys: Keys) -> None:
        self._r: Any = redis  # decodes to str, which redis-py's annotations cannot express
        self.key = keys.history

    async def last_ms(self) -> int | None:
        """The step start of the newest sample; None when there is none."""
        newest = await self._r.xrevrange(self.key, count=1)
        return int(newest[0][0].partition("-")[0]) if newest else None

    async def add(self, step_ms: int, fields: Mapping[str, int], keep_from_ms: int) -> bool:
        """Write the sample of the step starting at ``step_ms`` and drop those of steps
        before ``keep_from_ms``; False (and nothing written) when the stream already holds
        a sample of this step or a later one."""
        try:
            await self._r.xadd(
                self.key, dict(fields), id=f"{step_ms}-0", minid=keep_from_ms, approximate=False
            )
        except ResponseError as exc:
            if "equal or smaller" in str(exc):  # another process wrote this step first
                return False
            raise
        return True

    async def since(self, from_ms: int) -> list[tuple[int, dict[str, str]]]:
        """(step start ms, fields) of every sample of the steps from ``from_ms`` on, oldest first."""
        entries = await self._r.xrange(self.key, min=f"{max(from_ms, 0)}-0", max="+")
        return [(int(entry.partition("-")[0]), dict(fields)) for entry, fields in entries]
