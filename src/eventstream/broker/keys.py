"""Every Redis key EventStream uses, built from one hash-tagged prefix.

All keys of a deployment share the hash tag ``{prefix}`` so they live in one
Redis Cluster slot and every script can touch all of them atomically.

    {p}:stream        STREAM  queued and in-flight events; consumer group ``workers``.
                              Entry fields: id, e (the event envelope, JSON), and
                              once the event has failed a (attempts already made)
                              and f (first failure, ms); absent: 0 and none.
                              A completed entry is XACKed and XDELed: the stream
                              holds only live work.
    {p}:status        HASH    event id -> where a live event is:
                              "q:<entry id>"          queued or in flight in {p}:stream
                              "r:<attempts>:<first>"  waiting in {p}:retry
                              "d:<dlq entry id>"      dead, in {p}:dlq
                              A processed event has no field: the store is its record.
    {p}:retry         ZSET    event id scored by the time (ms) its next attempt is due.
    {p}:retry:body    HASH    event id -> envelope, for events waiting in {p}:retry.
    {p}:dlq           STREAM  dead events. Fields: id, t (type), e, a, reason, tb,
                              ff (first failure ms), lf (last failure ms).
    {p}:counters      HASH    exact monotonic counters (see eventstream.ops.metrics).
    {p}:hist          HASH    histogram bucket counts, sums and counts.
    {p}:workers       ZSET    consumer name scored by its last heartbeat (ms).
    {p}:overdue       HASH    consumer name -> its in-flight entries held longer than
                              their handlers' timeouts allow (JSON: count, oldest entry,
                              its event id, age and allowance in ms); written by the
                              worker's lease renewal when that changes, read by the audit.
    {p}:idem:<hash>   STRING  one idempotency key of one namespace: the id of the event
                              accepted under it (36 characters) followed by an 8-character
                              fingerprint of that event's content (absent for replays and
                              for records written before fingerprints), 44 bytes in all;
                              expires after the dedupe window. <hash> is BLAKE2b-128 of
                              the client's key, never the key itself, keyed by the
                              namespace: an API key's own ("key:<id>"), or one shared by
                              several keys ("ns:<name>"). Anonymous use hashes without a
                              key, so its names are those of every earlier version.
    {p}:lease:<job>   STRING  who runs a periodic job (e.g. ``retention``) this period;
                              expires after the period (take_turn.lua).
    {p}:apikeys       SET     ids of every API key ever created (revoked ones included).
    {p}:apikey:<id>   HASH    one API key: h (SHA-256 hex of the token; the token itself
                              is never stored), s (scope), n (name), r (events/s, 0: no
                              limit), b (burst), c (created ms), x (revoked ms, absent
                              while valid), u (last used ms, updated at most once a minute),
                              ns (shared idempotency namespace; absent: the key's own).
                              <id> is 12 hex digits, checked before it is used.
    {p}:rate:key:<id> STRING  GCRA theoretical arrival time (µs) of a key's rate limit;
                              expires when the bucket is full again.
    {p}:rate:addr:<h> STRING  the same for an anonymous client address (hashed).

Per live event Redis keeps one stream entry and one status field; per idempotent
event it also keeps one small key for the dedupe window.
"""

from __future__ import annotations

import functools
import hashlib
import re

from eventstream.settings import PREFIX_RE

GROUP = "workers"

_KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")


@functools.lru_cache(maxsize=4096)
def _namespace_key(namespace: str) -> bytes:
    """The BLAKE2b key of a namespace (32 bytes: a key may be at most 64)."""
    return hashlib.blake2b(namespace.encode(), digest_size=32, person=b"es-idem-ns").digest()


class Keys:
    """Key names for one deployment prefix."""

    __slots__ = (
        "api_keys",
        "counters",
        "dlq",
        "hist",
        "overdue",
        "prefix",
        "retry",
        "retry_body",
        "status",
        "stream",
        "tag",
        "workers",
    )

    def __init__(self, prefix: str) -> None:
        if not PREFIX_RE.fullmatch(prefix):  # match() would let a final newline through
            raise ValueError(f"key prefix {prefix!r} must be 1-64 characters of letters, digits, '_.:-'")
        self.prefix = prefix
        self.tag = "{" + prefix + "}"
        self.stream = f"{self.tag}:stream"
        self.status = f"{self.tag}:status"
        self.retry = f"{self.tag}:retry"
        self.retry_body = f"{self.tag}:retry:body"
        self.dlq = f"{self.tag}:dlq"
        self.counters = f"{self.tag}:counters"
        self.hist = f"{self.tag}:hist"
        self.workers = f"{self.tag}:workers"
        self.overdue = f"{self.tag}:overdue"
        self.api_keys = f"{self.tag}:apikeys"

    def idem(self, key: str, namespace: str | None = None) -> str:
        """The dedupe key for a client's idempotency key in ``namespace`` (None: anonymous
        use). Hashed: never a raw client string; keyed by the namespace, so one client key
        gives unrelated names in two namespaces."""
        ns = b"" if namespace is None else _namespace_key(namespace)
        digest = hashlib.blake2b(key.encode(), digest_size=16, key=ns).hexdigest()
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

    def lease(self, job: str) -> str:
        """The lease of a periodic job that one process at a time runs (see take_turn.lua)."""
        return f"{self.tag}:lease:{job}"

    def all_static(self) -> list[str]:
        return [
            self.stream,
            self.status,
            self.retry,
            self.retry_body,
            self.dlq,
            self.counters,
            self.hist,
            self.workers,
            self.overdue,
        ]
