"""The Event handlers receive, and the single codec between an event and the stream.

An event travels through Redis as an *envelope*: the JSON below, written once at
ingest and never rewritten (attempt counts travel beside it, in stream fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec


class Envelope(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    """What ingest stores for one event (JSON, camelCase like the HTTP API)."""

    id: str
    type: str
    payload: dict[str, Any]
    receivedAt: int  # ms since the epoch
    source: str | None = None
    severity: str | None = None
    timestamp: str | None = None
    idempotencyKey: str | None = None
    replayOf: str | None = None
    traceparent: str | None = None  # W3C trace context of the POST (only when tracing is on)
    tracestate: str | None = None
    orderingKey: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode_envelope(data: bytes | str) -> Envelope:
    return _decoder.decode(data)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# The range of datetime in milliseconds since the epoch: a time read back from Redis is
# clamped to it, so a corrupt or absurd value still formats instead of failing a request.
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def ms_to_iso(ms: int) -> str:
    ms = min(max(ms, _MIN_MS), _MAX_MS)
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a handler sees it.

    ``attempt`` is 1 on the first try. ``id`` is stable across retries, replays from
    the DLQ and redeliveries, so a handler can use it as the idempotency key of its
    own side effects. ``traceparent``/``tracestate`` hold the W3C trace context the event
    was posted with, when tracing is on and the POST carried one. ``ordering_key`` is the
    key it was posted with (events of one key run one at a time, in order), or None.
    """

    id: str
    type: str
    payload: dict[str, Any]
    attempt: int
    received_at: datetime
    source: str | None = None
    severity: str | None = None
    timestamp: str | None = None
    idempotency_key: str | None = None
    replay_of: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    ordering_key: str | None = None

    @classmethod
    def from_envelope(cls, env: Envelope, attempt: int) -> Event:
        return cls(
            id=env.id,
            type=env.type,
            payload=env.payload,
            attempt=attempt,
            received_at=ms_to_datetime(env.receivedAt),
            source=env.source,
            severity=env.severity,
            timestamp=env.timestamp,
            idempotency_key=env.idempotencyKey,
            replay_of=env.replayOf,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            ordering_key=env.orderingKey,
        )
