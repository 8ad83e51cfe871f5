"""What the broker hands its callers: stream entries, dead entries, where an event is.

The field names they are read from are keys.py's (``id``, ``e``, ``a``, ``f`` in the
stream; ``t``, ``reason``, ``tb``, ``ff``, ``lf`` in the DLQ).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry as read by a worker."""

    entry: str
    event_id: str
    attempts: int  # attempts already made before this delivery
    first_failure_ms: int | None
    envelope: str

    @classmethod
    def from_fields(cls, entry: str, fields: dict[str, str]) -> StreamEntry:
        first = fields.get("f") or ""
        return cls(
            entry=entry,
            event_id=fields.get("id", ""),
            attempts=int(fields.get("a") or 0),
            first_failure_ms=int(first) if first else None,
            envelope=fields.get("e", ""),
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

    @classmethod
    def from_fields(cls, entry: str, f: dict[str, str]) -> DeadEntry:
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
        )


@dataclass(frozen=True, slots=True)
class Located:
    """Where a live (not yet processed) event is in Redis."""

    status: str  # queued | processing | retrying | dead
    envelope: str
    attempts: int
    next_attempt_ms: int | None = None
    dead: DeadEntry | None = None
