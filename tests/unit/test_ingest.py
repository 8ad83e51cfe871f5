"""Ingest validation: parse_event, parse_batch, to_envelope, idempotency keys. Pure, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from eventstream.errors import PayloadTooLarge, ValidationError
from eventstream.event import decode_envelope
from eventstream.incoming import KEY_MAX, IncomingEvent, parse_event
from eventstream.incoming import _key_count as _key_count
from eventstream.ingest.accept import (
    batch_item_keys,
    check_idempotency_key,
    fingerprint,
    new_event_id,
    parse_batch,
    to_envelope,
)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"type": "A", "payload": {}}
    base.update(fields)
    return msgspec.json.encode({k: v for k, v in base.items() if v is not ...})


def rejected(raw: bytes, max_depth: int = 32) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_event(raw, max_depth)
    assert type(info.value) is ValidationError
    assert info.value.status == 422
    return info.value


def test_minimal_and_full_events_are_accepted() -> None:
    assert parse_event(body(), 32) == IncomingEvent(type="A", payload={})
    full = parse_event(
        body(
            type="payment.created:v2_x-1",
            payload={"a": [1, 2.5, "s", None, True, {"b": {}}]},
            source="s" * 256,
            severity="x" * 32,
            timestamp="2024-05-01T12:00:00+02:00",
            id="k" * KEY_MAX,
        ),
        32,
    )
    assert full.type == "payment.created:v2_x-1"
    assert full.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert full.id == "k" * KEY_MAX


@pytest.mark.parametrize("type_", ["A" * 128, "a", "0", "x.y:z-w_v"])
def test_valid_types(type_: str) -> None:
    assert parse_event(body(type=type_), 32).type == type_


@pytest.mark.parametrize(
    "type_", ["", "A" * 129, "has space", "slash/no", "ünï", "a\nb", "{tag}", "A\n", "A\r", "A\x00"]
)
def test_invalid_types_are_rejected_at_type(type_: str) -> None:
    err = rejected(body(type=type_))
    assert err.errors[0]["loc"] == "$.type"
    assert "$.type" in err.detail


@pytest.mark.parametrize("type_", [7, None, ["A"]])
def test_type_must_be_a_string(type_: object) -> None:
    err = rejected(body(type=type_))
    assert err.errors[0]["loc"] == "$.type"


@pytest.mark.parametrize("payload", [[], [1], "x", 1, None, True])
def test_payload_must_be_an_object(payload: object) -> None:
    err = rejected(body(payload=payload))
    assert err.errors == [{"loc": "$.payload", "msg": err.errors[0]["msg"]}]
    assert "Expected `object`" in err.detail


@pytest.mark.parametrize("missing", ["type", "payload"])
def test_required_fields(missing: str) -> None:
    err = rejected(body(**{missing: ...}))
    assert f"`{missing}`" in err.detail
    assert err.errors[0]["loc"] == "$"


def test_unknown_fields_are_rejected_and_named() -> None:
    err = rejected(body(extra=1))
    assert "unknown field `extra`" in err.detail
    assert err.errors[0]["loc"] == "$"


def nested(levels: int) -> dict[str, object]:
    """A payload ``levels`` containers deep (the payload itself counts)."""
    value: dict[str, object] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("limit", [1, 2, 5, 32])
def test_depth_limit_boundary(limit: int) -> None:
    assert parse_event(body(payload=nested(limit)), limit).payload == nested(limit)
    err = rejected(body(payload=nested(limit + 1)), limit)
    assert err.errors[0]["loc"] == "$.payload"
    assert f"deeper than {limit}" in err.detail


def test_depth_counts_arrays_and_not_scalars() -> None:
    assert parse_event(body(payload={"a": 1, "b": "x"}), 1).payload == {"a": 1, "b": "x"}
    rejected(body(payload={"a": [1]}), 1)
    assert parse_event(body(payload={"a": [1]}), 2)
    rejected(body(payload={"a": [[{}]]}), 3)


def test_a_payload_too_large_is_refused_where_it_is() -> None:
    def where(payload: object, max_depth: int = 32) -> tuple[str, str]:
        with pytest.raises(ValidationError) as info:
            parse_event(body(payload=payload), max_depth, max_keys=3, max_string=5)
        return info.value.errors[0]["loc"], info.value.errors[0]["msg"]

    assert where({"a": {"b": [1, "toolong"]}}) == ("$.payload.a.b[1]", "string longer than 5 characters")
    assert where({"a": [{"k1": 1, "k2": 2, "k3": 3, "k4": 4}]}) == (
        "$.payload.a[0]",
        "object with more than 3 keys",
    )
    assert where({"ok": {"longkey": 1}}) == ("$.payload.ok", "key longer than 5 characters")
    assert where({"abcdefghij" * 4: 1}) == ("$.payload", "key longer than 5 characters")
    # of two, the one the walk meets first: the last member, depth first
    assert where({"a": "toolong", "b": ["toolong"]})[0] == "$.payload.b[0]"
    # nested too deep beats too large, wherever each is
    too_deep, _ = where({"a": "toolong", "b": [[[1]]]}, max_depth=3)
    assert too_deep == "$.payload"
    within = parse_event(body(payload={"a": "short", "b": [[1]]}), 3, max_keys=3, max_string=5)
    assert within.payload == {"a": "short", "b": [[1]]}


def test_absurdly_deep_body_is_a_validation_error_not_a_crash() -> None:
    n = 50_000
    raw = b'{"type":"A","payload":{"a":' + b"[" * n + b"]" * n + b"}}"
    err = rejected(raw)
    assert err.errors[0]["loc"] == "$.payload"


@pytest.mark.parametrize(
    "ts", ["2024-05-01T12:00:00", "2024-05-01", "12:00:00Z", "yesterday", "2024-13-01T00:00:00Z", 1714564800]
)
def test_timestamp_must_be_iso8601_with_a_zone(ts: object) -> None:
    err = rejected(body(timestamp=ts))
    assert err.errors[0]["loc"] == "$.timestamp"


@pytest.mark.parametrize(
    ("ts", "utc"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"),
        ("2024-05-01T12:00:00.250-05:30", "2024-05-01T17:30:00.250000Z"),
    ],
)
def test_timestamp_is_stored_in_utc(ts: str, utc: str) -> None:
    event = parse_event(body(timestamp=ts), 32)
    _, envelope, _, _ = to_envelope(event, None, 1)
    assert decode_envelope(envelope).timestamp == utc


@pytest.mark.parametrize(("field", "limit"), [("source", 256), ("severity", 32), ("id", KEY_MAX)])
def test_string_length_limits(field: str, limit: int) -> None:
    assert getattr(parse_event(body(**{field: "x" * limit}), 32), field) == "x" * limit
    err = rejected(body(**{field: "x" * (limit + 1)}))
    assert err.errors[0]["loc"] == f"$.{field}"
    assert f"<= {limit}" in err.detail


def test_empty_id_is_rejected() -> None:
    err = rejected(body(id=""))
    assert err.errors[0]["loc"] == "$.id"


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b'{"type":"A","payload":{}} trailing', b'{"type":"A",}']
)
def test_malformed_json(raw: bytes) -> None:
    err = rejected(raw)
    assert err.detail.startswith("body is not valid JSON")


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"1", b"null"])
def test_body_must_be_an_object(raw: bytes) -> None:
    err = rejected(raw)
    assert err.errors[0]["loc"] == "$"


def test_invalid_utf8_is_a_validation_error() -> None:
    err = rejected(b'{"type":"A","payload":{"s":"\xff\xfe"}}')
    assert "UTF-8" in err.detail


# ---- batches --------------------------------------------------------------------


def batch(n: int) -> bytes:
    return msgspec.json.encode({"events": [{"type": "A", "payload": {"i": i}} for i in range(n)]})


def test_batch_returns_raw_events_in_order() -> None:
    items = parse_batch(batch(3), 10)
    assert [parse_event(bytes(r), 32).payload for r in items] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_batch_items_are_validated_one_by_one() -> None:
    raw = b'{"events":[{"type":"A","payload":{}}, {"nope": 1}, 7]}'
    items = parse_batch(raw, 10)
    assert len(items) == 3
    parse_event(bytes(items[0]), 32)
    with pytest.raises(ValidationError):
        parse_event(bytes(items[1]), 32)
    with pytest.raises(ValidationError):
        parse_event(bytes(items[2]), 32)


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(ValidationError, match="batch is empty") as info:
        parse_batch(b'{"events":[]}', 10)
    assert type(info.value) is ValidationError


def test_batch_size_limit() -> None:
    assert len(parse_batch(batch(10), 10)) == 10
    with pytest.raises(PayloadTooLarge, match="11 events; at most 10") as info:
        parse_batch(batch(11), 10)
    assert info.value.status == 413


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b"{}", "$"),
        (b'{"events":{}}', "$.events"),
        (b'{"events":[], "more":1}', "$"),
        (b"[]", "$"),
    ],
)
def test_batch_shape_errors_name_the_location(raw: bytes, loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_batch(raw, 10)
    assert info.value.errors[0]["loc"] == loc


def test_deep_batch_is_a_validation_error() -> None:
    n = 50_000
    raw = b'{"events":[' + b"[" * n + b"]" * n + b"]}"
    with pytest.raises(ValidationError):
        parse_batch(raw, 10)


# ---- envelopes and keys ---------------------------------------------------------


def test_to_envelope_fields() -> None:
    event = IncomingEvent(
        type="A",
        payload={"x": 1},
        source="s",
        severity="high",
        timestamp=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        id="body-key",
        orderingKey="account-7",
    )
    event_id, raw, dedupe, ordering = to_envelope(event, None, 1234, replay_of="old", namespace="key:abc")
    env = decode_envelope(raw)
    assert env.id == event_id
    assert (env.type, env.payload, env.receivedAt) == ("A", {"x": 1}, 1234)
    assert (env.source, env.severity, env.timestamp) == ("s", "high", "2023-12-31T23:00:00Z")
    assert dedupe is not None
    assert env.idempotencyKey == dedupe.key == "body-key"
    assert (dedupe.namespace, dedupe.fingerprint) == ("key:abc", fingerprint(event))
    assert env.replayOf == "old"
    assert env.orderingKey == ordering == "account-7"


def test_header_key_wins_over_body_id() -> None:
    event = IncomingEvent(type="A", payload={}, id="body-key")
    _, raw, dedupe, _ = to_envelope(event, "header-key", 1)
    assert dedupe is not None
    assert dedupe.key == "header-key"
    assert decode_envelope(raw).idempotencyKey == "header-key"
    _, raw, dedupe, _ = to_envelope(IncomingEvent(type="A", payload={}), None, 1)
    assert dedupe is None
    assert decode_envelope(raw).idempotencyKey is None


def test_event_ids_are_unique_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    a, _, _, _ = to_envelope(IncomingEvent(type="A", payload={}), "same", 1)
    b, _, _, _ = to_envelope(IncomingEvent(type="A", payload={}), "same", 1)
    assert a != b


def test_check_idempotency_key() -> None:
    assert check_idempotency_key(None) is None
    assert check_idempotency_key("k") == "k"
    assert check_idempotency_key("k" * KEY_MAX) == "k" * KEY_MAX
    for bad in ("", "k" * (KEY_MAX + 1)):
        with pytest.raises(ValidationError) as info:
            check_idempotency_key(bad)
        assert info.value.errors[0]["loc"] == "header.Idempotency-Key"


def test_fingerprint_is_the_content_however_written() -> None:
    a = parse_event(
        b'{"type":"A","payload":{"x":1,"y":[1,{"b":2,"a":1}]},"timestamp":"2026-01-01T01:00:00+01:00"}', 32
    )
    b = parse_event(
        b'{"timestamp":"2026-01-01T00:00:00Z", "payload":{"y":[1,{"a":1,"b":2}],"x":1},"type":"A"}', 32
    )
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 8
    assert fingerprint(a).decode().isascii()
    assert fingerprint(a) != fingerprint(parse_event(b'{"type":"A","payload":{"x":2}}', 32))
    assert fingerprint(a) != fingerprint(parse_event(b'{"type":"B","payload":{"x":1}}', 32))


def test_batch_item_keys() -> None:
    assert batch_item_keys(None, 3) is None
    assert batch_item_keys("k", 3) == ["k:0", "k:1", "k:2"]
    assert batch_item_keys("k" * 252, 1000) == [f"{'k' * 252}:{i}" for i in range(1000)]
    with pytest.raises(ValidationError, match="at most 252"):
        batch_item_keys("k" * 253, 1000)


@pytest.mark.parametrize(
    ("raw", "keys"),
    [
        (b'{"a":1}', 1),
        (b'{"a" :"b:", "c" : {"d":"\\\\"}, "e":["f:", "g"]}', 4),
        (b'{"a\\":":1, "\\"":2}', 2),
        (b'["a", "b"]', 0),
    ],
)
def test_key_count(raw: bytes, keys: int) -> None:
    assert _key_count(raw) == keys
