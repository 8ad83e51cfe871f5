"""Conservation: every accepted event is accounted for exactly once.

The law itself (``received == processed + dlq + deleted + queued + pending +
scheduled``) is the product's: ``eventstream.ops.audit.audit`` reads it in one MULTI
and names a breach as its ``conservation`` problem. What the tests add on top is
theirs: where each event is (exactly one place, and its status field says which),
that the DLQ's length matches its counters, and that nothing lies outside the key
layout.

``check(redis, keys)`` snapshots everything EventStream keeps in Redis for one prefix
(``state``) and asserts all of it; the broker tests use it after every script call.
``assert_conserved(redis, broker, store, ids)`` is the worker tests' check, with the store.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from eventstream.broker import GROUP, Broker, Keys, Layout
from eventstream.broker.keys import Record
from eventstream.ops.audit import AuditReport, audit
from eventstream.store import SqlStore, create_store
from tests.support.broker import expiry_of, server_ms
from tests.support.workers import dead_entries

# The tests' leases: the audit only uses it to tell entries being settled from stranded ones.
VISIBILITY_TIMEOUT_MS = 30_000


async def audit_now(broker: Broker, store: SqlStore) -> AuditReport:
    """The product's audit of this broker's prefix against ``store``, now."""
    return await audit(
        broker, store, time.time_ns() // 1_000_000, visibility_timeout_ms=VISIBILITY_TIMEOUT_MS
    )


def assert_law(report: AuditReport) -> None:
    """The conservation law holds in the audit's reading of the counters and sizes."""
    broken = [p.detail for p in report.problems if p.code == "conservation"]
    assert not broken, f"conservation broken: {broken[0]}"


async def assert_law_in_redis(redis: Redis, keys: Keys | Layout) -> None:
    """The audit's law for a prefix whose events never reach a store (the broker tests
    run the scripts alone): the audit reads the sums from Redis only; its store, empty,
    serves the checks that look there, which are not asserted here."""
    store = create_store("sqlite+aiosqlite://")
    try:
        await store.create_schema()
        assert_law(await audit_now(Broker(redis, keys), store))
    finally:
        await store.close()


@dataclass(frozen=True)
class Pending:
    entry: str
    consumer: str
    deliveries: int


@dataclass(frozen=True)
class State:
    """Everything EventStream keeps in Redis for one prefix (idle times excluded)."""

    stream: list[tuple[str, dict[str, str]]]
    pending: list[Pending]
    status: dict[str, str]
    retry: dict[str, int]
    retry_body: dict[str, str]
    dlq: list[tuple[str, dict[str, str]]]
    counters: dict[str, int]
    hist: dict[str, int]
    workers: dict[str, int]
    # dedupe record (keys.Record, or an earlier version's key) -> its event id
    idem: dict[Record | str, str] = field(default_factory=dict)
    stray: list[str] = field(default_factory=list)  # keys of the prefix not in keys.py's layout
    order: dict[str, int] = field(default_factory=dict)  # ordering key digest -> released count
    lines: dict[str, list[str]] = field(default_factory=dict)  # digest -> parked ids, in order
    parked: dict[str, str] = field(default_factory=dict)  # parked id -> "<ms>:<envelope>"
    waiting: dict[str, int] = field(default_factory=dict)  # digest -> its first parked one's ms
    parked_at: dict[str, int] = field(default_factory=dict)  # parked id -> ms, as its line's member says
    emits: dict[str, str] = field(default_factory=dict)  # parent id -> its staged follow-ups
    outbox: dict[str, str] = field(default_factory=dict)  # follow-up id -> envelope, for another partition
    retry_error: dict[str, str] = field(default_factory=dict)  # retrying id -> the failure that scheduled it

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def without_counters(self) -> State:
        return replace(self, counters={})

    def stream_ids(self) -> list[str]:
        return [f["id"] for _, f in self.stream]

    def dlq_ids(self) -> list[str]:
        return [f["id"] for _, f in self.dlq]


async def state(redis: Redis, keys: Keys) -> State:
    r: Any = redis
    stream = [(e, dict(f)) for e, f in await r.xrange(keys.stream)]
    try:
        raw_pending = await r.xpending_range(keys.stream, GROUP, "-", "+", 100_000)
    except ResponseError as exc:  # no stream or no group yet
        if "NOGROUP" not in str(exc):
            raise
        raw_pending = []
    pending = [Pending(p["message_id"], p["consumer"], int(p["times_delivered"])) for p in raw_pending]
    retry = {m: int(s) for m, s in await r.zrange(keys.retry, 0, -1, withscores=True)}
    dlq = [(e, dict(f)) for e, f in await r.xrange(keys.dlq)]
    idem, stray = {}, []
    raw_order = await r.hgetall(keys.order)
    order, lines, parked_at = _lines(raw_order, await r.hgetall(keys.lines))
    known = set(keys.all_static())
    async for k in r.scan_iter(match=f"{keys.tag}*", count=1000):
        if k.startswith(f"{keys.tag}:dedupe:"):
            idem.update(await dedupe_records(r, k))
        elif k.startswith(f"{keys.tag}:idem:"):  # an earlier version's record
            idem[k] = (await r.get(k))[:36]  # the event id; a content fingerprint may follow
        elif k not in known:
            stray.append(k)
    return State(
        stream=stream,
        pending=pending,
        status=await r.hgetall(keys.status),
        retry=retry,
        retry_body=await r.hgetall(keys.retry_body),
        retry_error=await r.hgetall(keys.retry_error),
        dlq=dlq,
        counters={k: int(v) for k, v in (await r.hgetall(keys.counters)).items()},
        hist={k: int(v) for k, v in (await r.hgetall(keys.hist)).items()},
        workers={m: int(s) for m, s in await r.zrange(keys.workers, 0, -1, withscores=True)},
        idem=idem,
        stray=sorted(stray),
        order=order,
        lines=lines,
        parked_at=parked_at,
        parked=await r.hgetall(keys.parked),
        waiting={m: int(s) for m, s in await r.zrange(keys.waiting, 0, -1, withscores=True)},
        emits=await r.hgetall(keys.emits),
        outbox=await r.hgetall(keys.outbox),
    )


async def dedupe_records(r: Any, name: str) -> dict[Record | str, str]:
    """The live records of one dedupe hash (not expired on the server's clock): Record ->
    the event id."""
    raw: dict[bytes, bytes] = await r.execute_command("HGETALL", name, NEVER_DECODE=True)
    now = await server_ms(r)
    return {Record(name, f): str(uuid.UUID(bytes=v[6:22])) for f, v in raw.items() if expiry_of(v) > now}


def _lines(
    raw_order: dict[str, str], places: dict[str, str]
) -> tuple[dict[str, int], dict[str, list[str]], dict[str, int]]:
    """From {p}:order ("<active>" or "<active>:<head>:<tail>") and {p}:lines
    ("<kd>:<place>" -> "<ms>:<id>"): each busy key's released count, each line's parked
    ids in order, and the time each line's entry says its event was parked. Every place
    of every line is there, and no other."""
    order: dict[str, int] = {}
    lines: dict[str, list[str]] = {}
    parked_at: dict[str, int] = {}
    seen: set[str] = set()
    for digest, value in raw_order.items():
        assert re.fullmatch(r"\d+(:\d+:\d+)?", value), (digest, value)
        active, _, rest = value.partition(":")
        order[digest] = int(active)
        if not rest:
            continue
        head, tail = (int(x) for x in rest.split(":"))
        assert head <= tail, f"key {digest} names an empty line: {value}"
        for place in range(head, tail + 1):
            name = f"{digest}:{place}"
            assert name in places, f"key {digest}'s line lacks place {place}"
            ms, _, event_id = places[name].partition(":")
            lines.setdefault(digest, []).append(event_id)
            parked_at[event_id] = int(ms)
            seen.add(name)
    assert seen == set(places), f"places outside every line: {sorted(set(places) - seen)}"
    return order, lines, parked_at


_RETRY_STATUS = re.compile(r"^r:\d+:\d*(:[0-9a-f]{32})?$")


def assert_state(s: State) -> None:
    """Nothing duplicated, nothing left behind (the law itself is the audit's: ``check``)."""
    assert s.stray == [], f"keys outside the layout: {s.stray}"

    # the DLQ holds what was dead-lettered and neither replayed nor deleted
    in_dlq = s.counter("dead_lettered") - s.counter("replayed") - s.counter("deleted")
    assert len(s.dlq) == in_dlq, f"DLQ holds {len(s.dlq)}, counters say {in_dlq}: {s.counters}"

    # every live event is in exactly one place and its status says which
    expected: dict[str, str] = {}
    for entry, f in s.stream:
        assert f["id"] not in expected, f"event {f['id']} twice"
        # fresh events carry no attempt fields; a retry back from the retry set does; an
        # event with an ordering key carries its digest
        assert set(f) - {"k"} in ({"id", "e"}, {"id", "a", "f", "e"}), f
        expected[f["id"]] = f"q:{entry}"
    for event_id in s.retry:
        assert event_id not in expected, f"event {event_id} twice"
        expected[event_id] = "r"
    for entry, f in s.dlq:
        assert f["id"] not in expected, f"event {f['id']} twice"
        expected[f["id"]] = f"d:{entry}"
    for digest, line in s.lines.items():
        for event_id in line:
            assert event_id not in expected, f"event {event_id} twice"
            expected[event_id] = f"k:{digest}"
    assert set(s.status) == set(expected), f"status {s.status} vs live {expected}"
    for event_id, where in expected.items():
        if where == "r":
            assert _RETRY_STATUS.match(s.status[event_id]), s.status[event_id]
        else:
            assert s.status[event_id] == where
    assert set(s.retry_body) == set(s.retry), "retry body and retry set disagree"
    assert set(s.retry_error) <= set(s.retry), "a failure kept for an event not waiting for a retry"
    assert_order(s)

    # the PEL only names entries that are still in the stream
    entries = {e for e, _ in s.stream}
    for p in s.pending:
        assert p.entry in entries, f"PEL names {p.entry}, which is not in the stream"


def assert_order(s: State) -> None:
    """The ordering records agree with the events: each busy key counts exactly its
    released events (stream and retry set), a key has parked events only while busy,
    every parked event has its body, and the waiting set names each line's first."""
    released: dict[str, int] = {}
    for _, f in s.stream:
        if "k" in f:
            released[f["k"]] = released.get(f["k"], 0) + 1
    for event_id in s.retry:
        _, _, digest = s.status[event_id].partition(":")[2].partition(":")[2].partition(":")
        if digest:
            released[digest] = released.get(digest, 0) + 1
    assert s.order == released, f"busy keys {s.order} vs released events {released}"
    for digest in s.lines:
        assert digest in s.order, f"key {digest} has parked events and none released"
    parked_ids = [i for line in s.lines.values() for i in line]
    assert sorted(parked_ids) == sorted(s.parked), "parked bodies and lines disagree"
    for event_id, body in s.parked.items():
        assert s.parked_at[event_id] == int(body.partition(":")[0]), "a line and a body disagree on a time"
    heads = {d: int(s.parked[line[0]].partition(":")[0]) for d, line in s.lines.items()}
    assert s.waiting == heads, f"waiting {s.waiting} vs the lines' first {heads}"


async def check(redis: Redis, keys: Keys) -> State:
    """Snapshot and assert conservation: the audit's law, then where each event is."""
    s = await state(redis, keys)
    await assert_law_in_redis(redis, keys)
    assert_state(s)
    return s


async def check_layout(redis: Redis, layout: Layout) -> list[State]:
    """``check`` for a deployment of several partitions: the audit's law (it checks each
    partition's), then each partition's state; nothing strays under the deployment's own
    tag. Returns each partition's state."""
    states = [await state(redis, part) for part in layout.parts]
    await assert_law_in_redis(redis, layout)
    for s in states:
        assert_state(s)
    if layout.count > 1:
        own = await state(redis, layout.deployment)
        assert own.stray == [], f"keys outside the layout: {own.stray}"
        assert (own.stream, own.status, own.counters) == ([], {}, {}), "events under the deployment's tag"
    return states


async def assert_conserved(redis: Redis, broker: Broker, store: SqlStore, ids: list[str]) -> dict[str, str]:
    """The audit's law holds; each id is in exactly one place (the store, the DLQ, the
    retry set, the stream, a parked line) and the status hash agrees. Returns id -> place.
    """
    r: Any = redis
    assert_law(await audit_now(broker, store))
    dead = await dead_entries(redis, broker)

    in_store = await store.existing(ids)
    in_retry: set[str] = set()
    in_stream: set[str] = set()
    in_line: set[str] = set()
    status: dict[str, str] = {}
    for part in broker.partitions:
        k = part.keys
        in_retry |= set(await r.zrange(k.retry, 0, -1))
        in_line |= set(await r.hkeys(k.parked))
        in_stream |= {f["id"] for _, f in await r.xrange(k.stream, "-", "+")}
        for event_id, value in (await r.hgetall(k.status)).items():
            assert event_id not in status, f"{event_id} has a status in two partitions"
            status[event_id] = value
    places: dict[str, str] = {}
    for event_id in ids:
        where = [
            name
            for name, found in (
                ("store", event_id in in_store),
                ("dlq", event_id in dead),
                ("retry", event_id in in_retry),
                ("stream", event_id in in_stream),
                ("parked", event_id in in_line),
            )
            if found
        ]
        assert len(where) == 1, f"{event_id} is in {where or 'no place'}"
        places[event_id] = where[0]
        expected_kind = {"store": None, "dlq": "d", "retry": "r", "stream": "q", "parked": "k"}[where[0]]
        value = status.get(event_id)
        kind = value.partition(":")[0] if value else None
        assert kind == expected_kind, f"{event_id} is in {where[0]} but its status is {value!r}"
    return places
