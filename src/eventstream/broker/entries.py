"""What the broker hands its callers: stream entries, dead entries, where an event is.

The field names they are read from are keys.py's (``id``, ``e``, ``k``, ``a``, ``f`` in the
stream; ``t``, ``reason``, ``tb``, ``ff``, ``lf`` in the DLQ).
"""

from __future__ import annotations

from dataclasses import dataclass

Ref = tuple[int, str]  # (partition, stream entry id): one delivery, unique in a deployment


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as read by a worker."""

    entry: str
    event_id: str
    attempts: int  # attempts already made before this delivery
    first_failure_ms: int | None
    envelope: str
    partition: int = 0
    order: str = ""  # the digest of its ordering key (keys.order_digest); '': none

    @property
    def ref(self) -> Ref:
        """Entry ids are unique within a partition's stream only."""
        return (self.partition, self.entry)

    @classmethod
    def from_fields(cls, entry: str, fields: dict[str, str], partition: int = 0) -> StreamEntry:
        first = fields.get("f") or ""
        return cls(
            entry=entry,
            event_id=fields.get("id", ""),
            attempts=int(fields.get("a") or 0),
            first_failure_ms=int(first) if first else None,
            envelope=fields.get("e", ""),
            partition=partition,
            order=fields.get("k", ""),
        )


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One DLQ entry."""

    dlq_entry: str
    event_id: str
    type: str
    envelope: str
    attempts: int
    reason: str
    traceback: str
    first_failure_ms: int
    last_failure_ms: int
    partition: int = 0

    @property
    def position(self) -> str:
        """Where the entry is in the deployment's DLQ, as callers name it (cursors):
        ``ms-seq`` in partition 0 (all of a one-partition deployment's), ``ms-seq-p`` in
        partition p. Positions order by (ms, seq, partition): see position_key."""
        return dead_position(self.dlq_entry, self.partition)

    @classmethod
    def from_fields(cls, entry: str, f: dict[str, str], partition: int = 0) -> DeadEntry:
        return cls(
            dlq_entry=entry,
            event_id=f.get("id", ""),
            type=f.get("t", ""),
            envelope=f.get("e", ""),
            attempts=int(f.get("a") or 0),
            reason=f.get("reason", ""),
            traceback=f.get("tb", ""),
            first_failure_ms=int(f.get("ff") or 0),
            last_failure_ms=int(f.get("lf") or 0),
            partition=partition,
        )


def dead_position(dlq_entry: str, partition: int) -> str:
    """A DLQ entry's position (DeadEntry.position)."""
    return dlq_entry if partition == 0 else f"{dlq_entry}-{partition}"


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """Which DLQ entries a count takes (Broker.count_dead): the type, text the reason
    contains (ignoring the case of A-Z only, see count_dead.lua), and the last failure's
    time (``since_ms`` inclusive, ``until_ms`` exclusive). None: any."""

    type: str | None = None
    text: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeadTally:
    """One slice of one partition's DLQ counted (count_dead.lua)."""

    matched: int
    examined: int
    last: str | None  # the last entry id examined; None: none was
    firsts: list[tuple[str, str]]  # (DLQ position, event id) of the first matching entries


def retry_record(ref: str) -> tuple[int, int | None]:
    """(attempts made, first failure ms) from a retry status field without its ``r:``
    (``<attempts>:<first>[:<key digest>]``, keys.py)."""
    attempts, _, rest = ref.partition(":")
    first = rest.split(":", 1)[0]
    return int(attempts or 0), int(first) if first else None


def position_key(position: str) -> tuple[int, int, int] | None:
    """(ms, seq, partition) of a DLQ position (DeadEntry.position); None when it is not one."""
    parts = position.split("-")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() and len(p) <= 20 for p in parts):
        return None
    ms, seq, partition = (int(p) for p in (*parts, "0")[:3])
    if ms >= 2**64 or seq >= 2**64:
        return None
    return ms, seq, partition


@dataclass(frozen=True, slots=True)
class Located:
    """Where a live (not yet processed) event is in Redis."""

    status: str  # queued | processing | retrying | dead
    envelope: str
    attempts: int
    next_attempt_ms: int | None = None
    dead: DeadEntry | None = None
    parked_ms: int | None = None  # when it was parked behind its ordering key's busy events
    first_failure_ms: int | None = None  # its first failed try (a retried event's)
    last_error: str | None = None  # a retrying event's: the failure that scheduled its retry
