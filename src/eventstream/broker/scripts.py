"""Loads the .lua files beside this module; one typed async function per script.

Every function takes a client that may be a pipeline: then the call is queued and
its reply comes back from ``pipeline.execute()``, so several transitions share one
round trip. Each script's header documents its KEYS, ARGV, reply and counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from importlib.resources import files
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from eventstream.broker.keys import GROUP, Keys

Client = Redis | Pipeline
Arg = str | int | float | bytes


class Dedupe(NamedTuple):
    """What makes one ingested event idempotent."""

    key: str  # the client's idempotency key (header or body id)
    namespace: str | None = None  # see Keys.idem; None: anonymous use
    fingerprint: bytes = b""  # 8 characters naming the event's content; b"": any content repeats it


class Outcome(IntEnum):
    """What ingest did with one event (0 and 1 read as "duplicate: False/True")."""

    NEW = 0  # enqueued under the id it was given
    DUPLICATE = 1  # its key was seen with the same content: nothing enqueued
    CONFLICT = 2  # its key was seen with other content: nothing enqueued, nothing counted


# Scripts that act on a worker's own deliveries start with the shared fencing helpers.
_FENCED = frozenset({"complete", "schedule_retry", "dead_letter", "renew"})


def _read(name: str) -> str:
    return (files("eventstream.broker") / f"{name}.lua").read_text()


def _source(name: str) -> str:
    return _read("fence") + _read(name) if name in _FENCED else _read(name)


class Scripts:
    """The registered scripts of one Redis connection pool and key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._s: dict[str, AsyncScript] = {
            name: redis.register_script(_source(name))
            for name in (
                "ingest",
                "complete",
                "schedule_retry",
                "dead_letter",
                "promote",
                "reclaim",
                "renew",
                "replay",
                "delete_dead",
                "take_turn",
                "authorize",
                "leave",
            )
        }

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[Arg], client: Client) -> Any:
        return await self._s[name](keys=list(keys), args=list(args), client=client)

    async def _queue(self, name: str, keys: Sequence[str], args: Sequence[Arg], pipe: Pipeline) -> None:
        # With a pipeline, AsyncScript.__call__ registers the script and queues EVALSHA;
        # the reply comes from pipe.execute().
        await self._s[name](keys=list(keys), args=list(args), client=pipe)

    async def ingest(
        self,
        client: Client,
        events: Sequence[tuple[str, bytes, Dedupe | str | None]],
        dedupe_window_ms: int,
    ) -> list[tuple[str, Outcome]]:
        """Enqueue (id, envelope, dedupe record) triples; a plain string is a key of the
        anonymous namespace without a fingerprint. Returns, per event, the id it goes by
        (the first event's for a duplicate or a conflict) and what was done."""
        k = self.keys
        keys = [k.stream, k.status, k.counters]
        keyed: list[Arg] = []
        prints: list[Arg] = []
        for i, (_, _, dedupe) in enumerate(events):
            if dedupe is None:
                continue
            if isinstance(dedupe, str):
                dedupe = Dedupe(dedupe)
            keys.append(k.idem(dedupe.key, dedupe.namespace))
            keyed.append(i)
            prints.append(dedupe.fingerprint)
        args: list[Arg] = [dedupe_window_ms, len(events), len(keyed), *keyed, *prints]
        for event_id, envelope, _ in events:
            args += (event_id, envelope)
        flat = await self._call("ingest", keys, args, client)
        results = [(event_id, Outcome.NEW) for event_id, _, _ in events]
        for j in range(0, len(flat), 3):
            results[int(flat[j])] = (str(flat[j + 1]), Outcome(int(flat[j + 2])))
        return results

    def complete_args(
        self, consumer: str, done: Sequence[tuple[str, str, bool]], hist: Sequence[tuple[str, int]]
    ) -> tuple[list[str], list[Arg]]:
        """done: (entry, event id, skipped because already in the store)."""
        k = self.keys
        args: list[Arg] = [GROUP, consumer, len(done)]
        for entry, event_id, skipped in done:
            args += [entry, event_id, int(skipped)]
        for field, amount in hist:
            args += [field, amount]
        return [k.stream, k.status, k.counters, k.hist], args

    def retry_args(
        self, consumer: str, retries: Sequence[tuple[str, str, int, int, int, bytes]]
    ) -> tuple[list[str], list[Arg]]:
        """retries: (entry, event id, due ms, attempts made, first failure ms, envelope)."""
        k = self.keys
        args: list[Arg] = [GROUP, consumer, len(retries)]
        for entry, event_id, due_ms, attempts, first_ms, _ in retries:
            args += [entry, event_id, due_ms, attempts, first_ms]
        args += [r[5] for r in retries]
        return [k.stream, k.status, k.counters, k.retry, k.retry_body], args

    def dead_args(
        self, consumer: str, dead: Sequence[tuple[str, str, str, bytes, int, str, str, int, int, bool]]
    ) -> tuple[list[str], list[Arg]]:
        """dead: (entry, id, type, envelope, attempts, reason, traceback, first ms, last ms, ran)."""
        k = self.keys
        args: list[Arg] = [GROUP, consumer, len(dead)]
        for entry, event_id, type_, env, attempts, reason, tb, first, last, ran in dead:
            args += [entry, event_id, type_, env, attempts, reason, tb, first, last, int(ran)]
        return [k.stream, k.status, k.counters, k.dlq], args

    async def queue(self, pipe: Pipeline, name: str, keys_args: tuple[list[str], list[Arg]]) -> None:
        await self._queue(name, keys_args[0], keys_args[1], pipe)

    async def complete(
        self,
        client: Client,
        consumer: str,
        done: Sequence[tuple[str, str, bool]],
        hist: Sequence[tuple[str, int]] = (),
    ) -> list[bool]:
        keys, args = self.complete_args(consumer, done, hist)
        return [bool(x) for x in await self._call("complete", keys, args, client)]

    async def schedule_retry(
        self,
        client: Client,
        consumer: str,
        retries: Sequence[tuple[str, str, int, int, int, bytes]],
    ) -> list[bool]:
        keys, args = self.retry_args(consumer, retries)
        return [bool(x) for x in await self._call("schedule_retry", keys, args, client)]

    async def dead_letter(
        self,
        client: Client,
        consumer: str,
        dead: Sequence[tuple[str, str, str, bytes, int, str, str, int, int, bool]],
    ) -> list[bool]:
        keys, args = self.dead_args(consumer, dead)
        return [bool(x) for x in await self._call("dead_letter", keys, args, client)]

    async def promote(self, client: Client, now_ms: int, limit: int) -> int:
        k = self.keys
        keys = [k.stream, k.status, k.retry, k.retry_body]
        return int(await self._call("promote", keys, [now_ms, limit], client))

    async def reclaim(
        self,
        client: Client,
        consumer: str,
        idle_ms: int,
        count: int,
        max_deliveries: int,
        now_ms: int,
    ) -> tuple[list[tuple[str, dict[str, str]]], list[tuple[str, str, int]]]:
        """(claimed entries with their fields, (event id, type, attempts) of the dead-lettered)."""
        k = self.keys
        keys = [k.stream, k.status, k.counters, k.dlq]
        args: list[Arg] = [GROUP, consumer, idle_ms, count, max_deliveries, now_ms]
        claimed, dead = await self._call("reclaim", keys, args, client)
        out: list[tuple[str, dict[str, str]]] = []
        for entry, fields in claimed:
            out.append((str(entry), dict(zip(fields[::2], fields[1::2], strict=True))))
        return out, [(str(i), str(t), int(a)) for i, t, a in dead]

    async def renew(self, client: Client, consumer: str, entries: Sequence[str], now_ms: int) -> list[str]:
        k = self.keys
        args: list[Arg] = [GROUP, consumer, now_ms, *entries]
        return [str(e) for e in await self._call("renew", [k.stream, k.workers], args, client)]

    async def replay(self, client: Client, dlq_entries: Sequence[str]) -> list[str]:
        k = self.keys
        keys = [k.stream, k.status, k.counters, k.dlq]
        return [str(e) for e in await self._call("replay", keys, list(dlq_entries), client)]

    async def delete_dead(self, client: Client, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """pairs: (DLQ entry id, event id)."""
        k = self.keys
        args: list[Arg] = [x for pair in pairs for x in pair]
        return [str(e) for e in await self._call("delete_dead", [k.status, k.counters, k.dlq], args, client)]

    async def authorize(
        self,
        client: Client,
        bucket: str,
        record: str | None,
        cost: int,
        *,
        rate: float = 0.0,
        burst: int = 0,
        digest: str = "",
        scope: str = "",
    ) -> list[Any]:
        """Check an API key (``record`` set) and charge its bucket, or charge an anonymous
        bucket at ``rate``/``burst``: the raw reply, see authorize.lua."""
        keys = [bucket] if record is None else [bucket, record]
        args: list[Arg] = [cost, rate, burst, digest, scope]
        return list(await self._call("authorize", keys, args, client))

    async def leave(self, client: Client, consumer: str) -> bool:
        """Drop the heartbeat, and the consumer when nothing is pending for it; False when
        the consumer was kept because it still owns entries (see leave.lua)."""
        k = self.keys
        return bool(await self._call("leave", [k.stream, k.workers], [GROUP, consumer], client))

    async def take_turn(self, client: Client, job: str, owner: str, period_ms: int) -> bool:
        """Whether ``owner`` runs ``job`` this period (at most one claimant per period)."""
        return bool(await self._call("take_turn", [self.keys.lease(job)], [owner, period_ms], client))
