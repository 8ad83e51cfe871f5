"""Every Redis key EventStream uses, built from one hash-tagged prefix.

A deployment is split into N partitions (``EVENTSTREAM_PARTITIONS``, default 1).
Each partition keeps all of its keys under one hash tag, so they live in one Redis
Cluster slot and every script touches them atomically; the partitions' tags are
chosen so that their slots spread evenly over the slot space (and so over the
primaries of a cluster whose slots are split in even ranges). Deployment-wide keys
(API keys, rate limits, leases, the partition count) live under ``{prefix}``.

With one partition, the partition's tag is ``{prefix}`` itself: the key names of a
deployment made before partitions existed. With N > 1, partition p's tag is
``{prefix#p}``, or ``{prefix#p.i}`` with the smallest i that puts its slot in the
p-th N-th of the slot space. ``#`` is not allowed in a prefix, so no deployment's
keys can be named like another's partition.

Below, {p} is a partition's tag, {d} the deployment's.

    {p}:stream        STREAM  queued and in-flight events; consumer group ``workers``.
                              Entry fields: id, e (the event envelope, JSON), k (the
                              digest of its ordering key; absent: none), and once the
                              event has failed a (attempts already made) and f (first
                              failure, ms); absent: 0 and none.
                              A completed entry is XACKed and XDELed: the stream
                              holds only live work.
    {p}:status        HASH    event id -> where a live event is:
                              "q:<entry id>"          queued or in flight in {p}:stream
                              "r:<attempts>:<first>[:<kd>]"  waiting in {p}:retry
                                                      (<kd>: its ordering key's digest)
                              "k:<kd>"                parked behind its ordering key's
                                                      busy events (see {p}:order)
                              "d:<dlq entry id>"      dead, in {p}:dlq
                              A processed event has no field: the store is its record.
    {p}:retry         ZSET    event id scored by the time (ms) its next attempt is due.
    {p}:retry:body    HASH    event id -> envelope, for events waiting in {p}:retry.
    {p}:retry:error   HASH    event id -> the failure that scheduled its retry ("Type:
                              message", at most 2,000 characters), while it waits in
                              {p}:retry (absent for retries scheduled before it existed).
    {p}:dlq           STREAM  dead events. Fields: id, t (type), e, a, reason, tb,
                              ff (first failure ms), lf (last failure ms), k (as in
                              the stream).
    {p}:counters      HASH    exact monotonic counters (see eventstream.ops.metrics).
    {p}:hist          HASH    histogram bucket counts, sums and counts.
    {p}:workers       ZSET    consumer name scored by its last heartbeat (ms); every
                              worker beats in every partition.
    {p}:order         HASH    ordering key digest (order_digest) -> "<active>", or
                              "<active>:<head>:<tail>" while some of its events wait:
                              active is how many of the key's events are released
                              (queued or in flight in {p}:stream, or waiting in
                              {p}:retry), head..tail the places of its line. A key is
                              busy while it has a field.
    {p}:lines         HASH    the events that wait ("parked") behind their key's busy
                              events: "<kd>:<place>" -> "<ms parked>:<event id>".
    {p}:parked        HASH    parked event id -> "<ms parked>:<envelope>".
    {p}:waiting       ZSET    digest of each key that has parked events, scored by the ms
                              its first one was parked.
                              (order.lua: the scripts that admit, finish and release them)
    {p}:emits         HASH    the follow-ups a handler emitted (Event.emit), staged between
                              its return and its completion: parent event id -> the
                              follow-ups (JSON, see eventstream.worker.follow_ups).
                              Written before the parent's store row, so a redelivery
                              that finds the row completes the parent with them; the
                              step that completes or dead-letters the parent drops it.
    {p}:outbox        HASH    follow-ups recorded by their parent's completion whose
                              partition is another one (their ordering key names it):
                              follow-up id -> envelope, until a worker relays them to
                              their partition (Broker.relay: the ingest script, deduped
                              on the follow-up's id, then HDEL).
    {d}:partitions    STRING  the deployment's partition count, recorded at the first
                              start; absent: 1 (a deployment made before partitions).
    {d}:overdue       HASH    consumer name -> its in-flight entries held longer than
                              their handlers' timeouts allow (JSON: count, oldest entry,
                              its event id, age and allowance in ms); written by the
                              worker's lease renewal when that changes, read by the audit.
    {d}:history       STREAM  the deployment's metrics history: one entry per step of time
                              (entry id ``<step start ms>-0``), fields t (when the sample
                              was taken, ms), the counters and the gauges it shows (see
                              eventstream.ops.history); trimmed by MINID on each write to
                              the last 20 minutes (240 entries at the 5 s step).
    {p}:dedupe:<s>    HASH    the dedupe records of one namespace's idempotency keys whose
                              <hash> (below) starts with the 3 hex digits <s> (4,096 such
                              hashes per partition at most): field = the next 24 hex
                              digits of <hash> as 12 bytes; value = when the record
                              expires (ms, 6 bytes big-endian), the id of the event
                              accepted under the key (16 bytes, a UUID) and a 6-byte
                              fingerprint of that event's content (absent when any
                              content counts as a repeat), 28 bytes in all. A record is
                              live until it expires, a dedupe window after it was
                              written. Each write also samples the hash (HRANDFIELD) and
                              deletes the expired records it finds, and gives the hash
                              the window as its TTL (never a shorter one than it has),
                              so a hash left alone goes whole.
                              <hash> is BLAKE2b-128 of the client's key, never the key
                              itself, keyed by the namespace: an API key's own
                              ("key:<id>"), or one shared by several keys ("ns:<name>").
                              Anonymous use hashes without a key, so its names are those
                              of every earlier version.
    {p}:idem:<hash>   STRING  an idempotency key's record as versions before the dedupe
                              hashes wrote it: the event id (36 characters) and an
                              8-character fingerprint; expires after the window. Still
                              read by ingest, never written.
    {d}:lease:<job>   STRING  who runs a periodic job (e.g. ``retention``) this period;
                              expires after the period (take_turn.lua).
    {d}:apikeys       SET     ids of every API key ever created (revoked ones included).
    {d}:apikey:<id>   HASH    one API key: h (SHA-256 hex of the token; the token itself
                              is never stored), s (scope), n (name), r (events/s, 0: no
                              limit), b (burst), c (created ms), x (revoked ms, absent
                              while valid), u (last used ms, updated at most once a minute),
                              ns (shared idempotency namespace; absent: the key's own).
                              <id> is 12 hex digits, checked before it is used.
    {d}:ui:session:<h> HASH   one signed-in dashboard session: k (API key id), d (SHA-256
                              hex of the key's token), c (created ms); <h> is SHA-256 of
                              the session cookie, never the cookie itself; expires with
                              the session.
    {d}:rate:key:<id> STRING  GCRA theoretical arrival time (µs) of a key's rate limit;
                              expires when the bucket is full again.
    {d}:rate:addr:<h> STRING  the same for an anonymous client address (hashed).

Per live event Redis keeps one stream entry and one status field; per idempotent
event it also keeps one dedupe record (a hash field) for the dedupe window.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import NamedTuple

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from eventstream.settings import PREFIX_RE

GROUP = "workers"

# The dedupe namespace of follow-ups relayed from an outbox (emits.py): an API key's
# namespaces are "key:<id>" and "ns:<name>", so none can be this one.
EMIT_NAMESPACE = "emit"

_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_SESSION_RE = re.compile(r"^[0-9a-f]{64}$")


@functools.lru_cache(maxsize=4096)
def _namespace_key(namespace: str) -> bytes:
    """The BLAKE2b key of a namespace (32 bytes: a key may be at most 64)."""
    return hashlib.blake2b(namespace.encode(), digest_size=32, person=b"es-idem-ns").digest()


MAX_PARTITIONS = 256


@functools.lru_cache(maxsize=64)
def partition_tags(prefix: str, partitions: int) -> tuple[str, ...]:
    """The hash tag of each partition (see the module docstring)."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1-{MAX_PARTITIONS}, not {partitions}")
    if partitions == 1:
        return ("{" + prefix + "}",)
    tags = []
    for p in range(partitions):
        low = p * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (p + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        i, body = 0, f"{prefix}#{p}"
        while not low <= key_slot(body.encode()) < high:
            i += 1
            body = f"{prefix}#{p}.{i}"
        tags.append("{" + body + "}")
    return tuple(tags)


def order_digest(key: str) -> str:
    """BLAKE2b-128 (hex) of an ordering key: it names the key's records ({p}:order...) and
    picks its partition. Ordering keys are not namespaced: one key is one line of events,
    whoever sends them."""
    return hashlib.blake2b(key.encode(), digest_size=16, person=b"es-order").hexdigest()


def idem_digest(key: str, namespace: str | None) -> str:
    """BLAKE2b-128 (hex) of a client's idempotency key, keyed by its namespace (None:
    anonymous use): never a raw client string; one client key gives unrelated names in
    two namespaces. The dedupe record's name ends with it, and it picks the partition."""
    ns = b"" if namespace is None else _namespace_key(namespace)
    return hashlib.blake2b(key.encode(), digest_size=16, key=ns).hexdigest()


class Record(NamedTuple):
    """One dedupe record: the hash that holds it and its field there."""

    hash: str
    field: bytes


class Keys:
    """Key names under one hash tag: a partition's (stream, status...), or with the
    default tag ``{prefix}``, the deployment's (API keys, rate limits, leases), which
    with one partition are also that partition's."""

    __slots__ = (
        "api_keys",
        "counters",
        "dlq",
        "emits",
        "hist",
        "history",
        "lines",
        "order",
        "outbox",
        "overdue",
        "parked",
        "partitions",
        "prefix",
        "retry",
        "retry_body",
        "retry_error",
        "status",
        "stream",
        "tag",
        "waiting",
        "workers",
    )

    def __init__(self, prefix: str, tag: str | None = None) -> None:
        if not PREFIX_RE.fullmatch(prefix):  # match() would let a final newline through
            raise ValueError(f"key prefix {prefix!r} must be 1-64 characters of letters, digits, '_.:-'")
        self.prefix = prefix
        self.tag = tag or "{" + prefix + "}"
        self.stream = f"{self.tag}:stream"
        self.status = f"{self.tag}:status"
        self.retry = f"{self.tag}:retry"
        self.retry_body = f"{self.tag}:retry:body"
        self.retry_error = f"{self.tag}:retry:error"
        self.dlq = f"{self.tag}:dlq"
        self.counters = f"{self.tag}:counters"
        self.hist = f"{self.tag}:hist"
        self.workers = f"{self.tag}:workers"
        self.order = f"{self.tag}:order"
        self.lines = f"{self.tag}:lines"
        self.parked = f"{self.tag}:parked"
        self.waiting = f"{self.tag}:waiting"
        self.emits = f"{self.tag}:emits"
        self.outbox = f"{self.tag}:outbox"
        self.overdue = f"{self.tag}:overdue"
        self.history = f"{self.tag}:history"
        self.api_keys = f"{self.tag}:apikeys"
        self.partitions = f"{self.tag}:partitions"

    def dedupe(self, key: str, namespace: str | None = None) -> Record:
        """The dedupe record of a client's idempotency key in ``namespace`` (None:
        anonymous use); see idem_digest."""
        return self.dedupe_of(idem_digest(key, namespace))

    def dedupe_of(self, digest: str) -> Record:
        return Record(f"{self.tag}:dedupe:{digest[:3]}", bytes.fromhex(digest[3:27]))

    def idem(self, key: str, namespace: str | None = None) -> str:
        """The record an earlier version wrote for a client's idempotency key (read only)."""
        return self.idem_of(idem_digest(key, namespace))

    @property
    def ordering(self) -> tuple[str, str, str, str]:
        """The ordering records, in the order the scripts take them (order.lua's order_keys)."""
        return (self.order, self.lines, self.parked, self.waiting)

    def idem_of(self, digest: str) -> str:
        return f"{self.tag}:idem:{digest}"

    def api_key(self, key_id: str) -> str:
        """An API key's record; ``key_id`` must already be checked (12 hex digits)."""
        if not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"API key id {key_id!r} is not 12 hex digits")
        return f"{self.tag}:apikey:{key_id}"

    def key_bucket(self, key_id: str) -> str:
        if not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"API key id {key_id!r} is not 12 hex digits")
        return f"{self.tag}:rate:key:{key_id}"

    def addr_bucket(self, address: str) -> str:
        """The rate-limit bucket of an anonymous client address (hashed: never raw)."""
        digest = hashlib.blake2b(address.encode(), digest_size=16).hexdigest()
        return f"{self.tag}:rate:addr:{digest}"

    def ui_session(self, cookie_digest: str) -> str:
        """A dashboard session's record; ``cookie_digest`` is 64 hex digits."""
        if not _SESSION_RE.fullmatch(cookie_digest):
            raise ValueError("a session digest is 64 hex digits")
        return f"{self.tag}:ui:session:{cookie_digest}"

    def lease(self, job: str) -> str:
        """The lease of a periodic job that one process at a time runs (see take_turn.lua)."""
        return f"{self.tag}:lease:{job}"

    def all_static(self) -> list[str]:
        return [
            self.stream,
            self.status,
            self.retry,
            self.retry_body,
            self.retry_error,
            self.dlq,
            self.counters,
            self.hist,
            self.workers,
            self.order,
            self.lines,
            self.parked,
            self.waiting,
            self.emits,
            self.outbox,
            self.overdue,
            self.history,
            self.partitions,
        ]


class Layout:
    """A deployment's keys: its own (``deployment``) and each partition's (``parts``)."""

    __slots__ = ("count", "deployment", "parts")

    def __init__(self, prefix: str, partitions: int = 1) -> None:
        self.deployment = Keys(prefix)
        self.count = partitions
        tags = partition_tags(prefix, partitions)
        self.parts = (self.deployment,) if partitions == 1 else tuple(Keys(prefix, t) for t in tags)

    def partition_of(self, digest: str) -> int:
        """The partition of an idempotency key's or an ordering key's digest."""
        return int(digest[:8], 16) % self.count
