"""The envelope codec and the Event handlers see."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from eventstream.event import Envelope, Event, decode_envelope, encode_envelope, ms_to_datetime, ms_to_iso

FULL = Envelope(
    id="0192-abc",
    type="payment.created",
    payload={"amount": 12.5, "items": [1, {"sku": "x"}], "note": "ünïcødé", "none": None},
    receivedAt=1_700_000_000_123,
    source="shop",
    severity="warning",
    timestamp="2024-05-01T12:00:00Z",
    idempotencyKey="client-1",
    replayOf="0191-old",
)


def test_round_trip_keeps_every_field() -> None:
    data = encode_envelope(FULL)
    assert decode_envelope(data) == FULL
    assert decode_envelope(data.decode()) == FULL  # str as read from Redis


def test_encoding_is_camel_case_json_without_unset_fields() -> None:
    minimal = Envelope(id="e", type="A", payload={}, receivedAt=5)
    raw = encode_envelope(minimal)
    assert msgspec.json.decode(raw) == {"id": "e", "type": "A", "payload": {}, "receivedAt": 5}
    assert decode_envelope(raw) == minimal
    full = msgspec.json.decode(encode_envelope(FULL))
    assert set(full) == {
        "id",
        "type",
        "payload",
        "receivedAt",
        "source",
        "severity",
        "timestamp",
        "idempotencyKey",
        "replayOf",
    }


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = b'{"id":"e","type":"A","payload":{},"receivedAt":1,"addedLater":true}'
    assert decode_envelope(raw) == Envelope(id="e", type="A", payload={}, receivedAt=1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"id":"e","type":"A","payload":{}}',  # no receivedAt
        b'{"id":"e","type":"A","payload":[],"receivedAt":1}',  # payload not an object
        b'{"id":"e","type":7,"payload":{},"receivedAt":1}',
        b'{"id":"e","type":"A","payload":{},"receivedAt":"1"}',
    ],
)
def test_invalid_envelopes_raise_msgspec_errors(raw: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_envelope(raw)


def test_event_from_envelope_maps_every_field() -> None:
    event = Event.from_envelope(FULL, attempt=3)
    assert event == Event(
        id="0192-abc",
        type="payment.created",
        payload=FULL.payload,
        attempt=3,
        received_at=datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
        source="shop",
        severity="warning",
        timestamp="2024-05-01T12:00:00Z",
        idempotency_key="client-1",
        replay_of="0191-old",
    )


def test_event_is_immutable() -> None:
    event = Event.from_envelope(FULL, attempt=1)
    with pytest.raises(AttributeError):
        event.attempt = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("ms", "iso"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
    ],
)
def test_ms_to_iso(ms: int, iso: str) -> None:
    assert ms_to_iso(ms) == iso
    assert ms_to_datetime(ms).tzinfo is UTC
    parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    assert parsed == ms_to_datetime(ms)


def test_a_time_beyond_the_datetime_range_still_formats() -> None:
    from eventstream.event import ms_to_iso

    assert ms_to_iso(10**21).startswith("9999-12-31T23:59:59")
    assert ms_to_iso(-(10**21)) == "0001-01-01T00:00:00.000Z"
    assert ms_to_iso(0) == "1970-01-01T00:00:00.000Z"
