"""The Event handlers receive, and the single codec between an event and the stream.

An event travels through Redis as an *envelope*: the JSON below, written once at
ingest and never rewritten (attempt counts travel beside it, in stream fields).

A handler may emit follow-up events (``Event.emit``). Each is checked as ``POST
/events`` checks a body (eventstream.incoming, with the worker's limits) and named by
an id derived from its parent's id and its position among the follow-ups of the try,
so a try that runs again emits the same ids and nothing can double. It carries
``causationId`` (the parent's id) and a trace context: the handler's span when tracing
is on, else the parent's own. Follow-ups wait in the Event until the handler returns;
a try that fails emits nothing. The worker records them with the parent's completion
(eventstream.worker.follow_ups, complete.lua).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec

from eventstream.errors import PayloadTooLarge, ValidationError
from eventstream.incoming import encode_body, parse_event, too_deep, utc


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
    causationId: str | None = None  # a follow-up's parent (Event.emit)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode_envelope(data: bytes | str) -> Envelope:
    return _decoder.decode(data)


class FollowUp(NamedTuple):
    """One follow-up a try emitted: its id, type, payload and ordering key, and the
    envelope that will be enqueued."""

    id: str
    type: str
    payload: dict[str, Any]
    ordering_key: str | None
    envelope: bytes


@dataclass(frozen=True, slots=True)
class FollowUpLimits:
    """The ingest limits a follow-up is held to: Settings' defaults until a worker sets its own."""

    max_depth: int = 32
    max_object_keys: int | None = None
    max_string_length: int | None = None
    max_body_bytes: int = 1_048_576
    max_count: int = 1000  # follow-ups per try: the API's max_batch


follow_up_limits = FollowUpLimits()

# Where a follow-up's trace context comes from when tracing is on (set by
# eventstream.worker.tracing): the current span's (traceparent, tracestate), or None.
follow_up_trace: Callable[[], tuple[str, str | None] | None] | None = None


def child_id(parent_id: str, position: int) -> str:
    """The id of a parent's follow-up at ``position`` (0-based): a UUIDv7 whose time is the
    parent's (so it sorts beside it) and whose other bits hash the parent's id and the
    position."""
    digest = hashlib.blake2b(f"{parent_id}/{position}".encode(), digest_size=16, person=b"es-emit").digest()
    try:
        head = uuid.UUID(parent_id).bytes[:6]
    except ValueError:
        head = digest[:6]
    raw = bytearray(head + digest[6:])
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def _follow_up(
    parent: Event,
    position: int,
    type_: str,
    payload: dict[str, Any],
    source: str | None,
    severity: str | None,
    timestamp: datetime | str | None,
    ordering_key: str | None,
) -> FollowUp:
    """Check one follow-up as ``POST /events`` checks the body a client would send for it
    (the same encoding and limits as ``EventStream.publish``) and make its envelope;
    raises ValidationError (PayloadTooLarge) saying what is wrong."""
    limits = follow_up_limits
    if position >= limits.max_count:
        raise ValidationError(
            f"too many follow-ups: a try may emit at most {limits.max_count} events",
            [{"loc": "$", "msg": "too many follow-ups"}],
        )
    try:
        raw = encode_body(type_, payload, source, severity, timestamp, ordering_key)
    except RecursionError:
        raise too_deep(limits.max_depth) from None
    if len(raw) > limits.max_body_bytes:
        raise PayloadTooLarge(f"body is {len(raw)} bytes; the limit is {limits.max_body_bytes} bytes")
    event = parse_event(raw, limits.max_depth, limits.max_object_keys, limits.max_string_length)
    ts = None if event.timestamp is None else utc(event.timestamp).isoformat().replace("+00:00", "Z")
    trace = follow_up_trace() if follow_up_trace is not None else None
    if trace is None and parent.traceparent is not None:
        trace = (parent.traceparent, parent.tracestate)
    env = Envelope(
        id=child_id(parent.id, position),
        type=event.type,
        payload=event.payload,
        receivedAt=time.time_ns() // 1_000_000,
        source=event.source,
        severity=event.severity,
        timestamp=ts,
        orderingKey=event.orderingKey,
        causationId=parent.id,
    )
    if trace is not None:
        env.traceparent, env.tracestate = trace
    return FollowUp(env.id, event.type, event.payload, event.orderingKey, encode_envelope(env))


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
    ``causation_id`` is the id of the event whose handler emitted this one, or None.
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
    causation_id: str | None = None
    _follow_ups: list[FollowUp] | None = field(default=None, init=False, repr=False, compare=False)

    def emit(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> str:
        """Record a follow-up event, enqueued in the same atomic step that records this
        handler's completion, and only then: a try that fails (or a worker that dies
        before the completion is recorded) emits nothing, and a try that runs again
        emits the same ids, so follow-ups never double. Returns the follow-up's id.

        The follow-up is checked as ``POST /events`` checks an event (ValidationError
        says what is wrong); it carries ``causation_id`` (this event's id) and the trace
        context. At most ``EVENTSTREAM_MAX_BATCH`` follow-ups per try."""
        emitted = self._follow_ups
        if emitted is None:
            emitted = []
            object.__setattr__(self, "_follow_ups", emitted)
        follow_up = _follow_up(self, len(emitted), type, payload, source, severity, timestamp, ordering_key)
        emitted.append(follow_up)
        return follow_up.id

    @property
    def follow_ups(self) -> tuple[FollowUp, ...]:
        """The follow-ups emitted so far by this try (id, type, payload, ordering key,
        envelope): what a handler's unit test can check."""
        return tuple(self._follow_ups or ())

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
            causation_id=env.causationId,
        )
