"""The shape of an incoming event and the one check every way in runs on it.

``parse_event`` decodes and validates one event body (msgspec, one pass, no
intermediate models); every rejection is a ValidationError naming the field at fault.
POST /events, the batch items, the in-process publisher and the follow-ups a handler
emits (Event.emit) all go through it, so each accepts and refuses the same events.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from eventstream.errors import ValidationError

TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
KEY_MAX = 256


# No NUL characters in strings stored as text columns: PostgreSQL cannot store them.
NO_NUL = r"^[^\x00]*$"


# A key a client names (an idempotency key in the body, an ordering key).
CLIENT_KEY = msgspec.Meta(min_length=1, max_length=KEY_MAX, pattern=NO_NUL)


class IncomingEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The body of POST /events."""

    type: Annotated[str, msgspec.Meta(pattern=TYPE_PATTERN, description="Event type.")]
    payload: Annotated[dict[str, Any], msgspec.Meta(description="Any JSON object.")]
    source: Annotated[str, msgspec.Meta(max_length=256, pattern=NO_NUL)] | None = None
    severity: Annotated[str, msgspec.Meta(max_length=32, pattern=NO_NUL)] | None = None
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    id: (
        Annotated[
            str,
            CLIENT_KEY,
            msgspec.Meta(description="Client id: makes the post idempotent within the dedupe window."),
        ]
        | None
    ) = None
    orderingKey: (
        Annotated[
            str,
            CLIENT_KEY,
            msgspec.Meta(
                description="Events with one ordering key are handled one at a time (or up to the "
                "handler's key_concurrency), in the order they were accepted; other keys never wait "
                "behind them."
            ),
        ]
        | None
    ) = None


_event_decoder = msgspec.json.Decoder(IncomingEvent)


# Every JSON string, then ":" when it is an object key. Scanning from the left, each match
# starts at a string's opening quote (outside strings valid JSON has no quote), so the
# count of keys is exact for a body the decoder has accepted.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"[ \t\r\n]*(:?)')


def _key_count(raw: bytes) -> int:
    """How many object keys the JSON text ``raw`` spells out, repeats included."""
    return _STRING.findall(raw).count(b":")


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)


def _refuse_duplicate_keys(raw: bytes, where: str = "$") -> None:
    """Raise ValidationError when an object of ``raw`` repeats a key (decoders keep the
    last one silently). The slow exact check: callers run it only when the cheap count
    of keys says the body may repeat one."""
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as dup:
        msg = f"duplicate key {dup.key[:64]!r} in a JSON object: each key may appear only once"
        raise ValidationError(f"body is not valid: {msg}", [{"loc": where, "msg": msg}]) from None


# A \\uD800-\\uDBFF escape not followed by a \\uDC00-\\uDFFF one, or the other way round:
# msgspec reports it as "Input data was truncated" or a malformed hex escape.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
SURROGATE = (
    "it has a lone surrogate escape: \\uD800-\\uDFFF come only in pairs, high then low "
    "(e.g. \\uD83D\\uDE00), and one alone is no character"
)


def problem_from_msgspec(
    exc: msgspec.DecodeError | msgspec.ValidationError, raw: bytes = b""
) -> ValidationError:
    text = str(exc)
    where = "$"
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        where = rest.rstrip("`")
    if isinstance(exc, msgspec.ValidationError):
        return ValidationError(f"invalid event: {text} at {where}", [{"loc": where, "msg": text}])
    if "surrogate" in text or _LONE_SURROGATE.search(raw):
        text = SURROGATE
    return ValidationError(f"body is not valid JSON: {text}", [{"loc": where, "msg": text}])


def undecodable(exc: UnicodeDecodeError | RecursionError, max_depth: int | None) -> ValidationError:
    """msgspec raises these (not DecodeError) for invalid UTF-8 and for very deep nesting."""
    if isinstance(exc, UnicodeDecodeError):
        return ValidationError(
            "body is not valid JSON: it is not valid UTF-8", [{"loc": "$", "msg": "invalid UTF-8"}]
        )
    if max_depth is None:
        return ValidationError("batch is nested too deeply", [{"loc": "$.events", "msg": "nesting too deep"}])
    return too_deep(max_depth)


def too_deep(max_depth: int) -> ValidationError:
    """The refusal of a payload nested deeper than ``max_depth``."""
    return ValidationError(
        f"payload is nested deeper than {max_depth} levels",
        [{"loc": "$.payload", "msg": f"nesting deeper than {max_depth}"}],
    )


Path = tuple["Path | None", "str | int"] | None  # (the parent's path, key or index); None: the payload


def _where(path: Path) -> str:
    parts = []
    while path is not None:
        path, key = path
        parts.append(f".{key[:32]}" if isinstance(key, str) else f"[{key}]")
    return "$.payload" + "".join(reversed(parts))


def _walk_payload(
    value: Any, max_depth: int, max_keys: int, max_string: int
) -> tuple[int, tuple[str, str] | None, int]:
    """One walk of a decoded payload: its nesting depth (objects and arrays inside one
    another: ``{}`` and ``{"a": 1}`` are 1, ``{"a": [1]}`` is 2; the walk stops once it
    passes ``max_depth``), the first (where, what) of an object with too many keys or a
    string or key too long, else None, and the number of object keys (every key when
    nothing is too large). Where a value is, is spelt out only for the one reported."""
    deepest = keys = 0
    over: tuple[Path, str] | None = None
    stack: list[tuple[Any, int, Path]] = [(value, 1, None)]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if over is None and len(item) > max_string:
                over = (path, f"string longer than {max_string} characters")
            continue
        if isinstance(item, dict):
            if over is None and len(item) > max_keys:
                over = (path, f"object with more than {max_keys} keys")
            keys += len(item)
            for k, v in item.items():
                if over is None and len(k) > max_string:
                    over = (path, f"key longer than {max_string} characters")
                stack.append((v, depth + 1, (path, k)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1, (path, i)) for i, v in enumerate(item))
        else:
            continue  # a scalar adds no level
        if depth > deepest:
            deepest = depth
            if deepest > max_depth:
                break
    return deepest, (None if over is None else (_where(over[0]), over[1])), keys


def utc(timestamp: datetime) -> datetime:
    """``timestamp`` in UTC; ValidationError when UTC would leave years 1-9999."""
    try:
        return timestamp.astimezone(UTC)
    except OverflowError:
        msg = "out of range: in UTC it falls outside the years 1 to 9999"
        raise ValidationError(
            f"invalid event: timestamp is {msg}", [{"loc": "$.timestamp", "msg": msg}]
        ) from None


def parse_event(
    raw: bytes, max_depth: int, max_keys: int | None = None, max_string: int | None = None
) -> IncomingEvent:
    """Decode and validate one event; raises ValidationError saying what is wrong.

    ``max_keys`` (keys per object) and ``max_string`` (characters per string or key)
    bound the payload when given."""
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise problem_from_msgspec(exc, raw) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise undecodable(exc, max_depth) from None
    if event.type.endswith("\n"):  # msgspec uses re.search, whose "$" matches before a final newline
        msg = f"Expected `str` matching regex {TYPE_PATTERN!r}"
        raise ValidationError(f"invalid event: {msg} at $.type", [{"loc": "$.type", "msg": msg}])
    # With no limits given every size passes, and the walk still counts the keys.
    depth, over, payload_keys = _walk_payload(
        event.payload, max_depth, max_keys or len(raw), max_string or len(raw)
    )
    if depth > max_depth:  # first: whatever else is wrong with a payload nested too deep
        raise too_deep(max_depth)
    if over is not None:
        where, what = over
        raise ValidationError(f"payload has an {what} at {where}", [{"loc": where, "msg": what}])
    # Repeated keys, cheaply: the body spells out at least as many keys as were decoded,
    # and exactly as many when none repeats and no field is sent as null (absent and null
    # decode alike). Every key is followed by a colon, so the colons bound the keys from
    # above; when they leave room for more keys than were decoded, the keys are counted,
    # and only when those are more, the exact check runs.
    colons = raw.count(b":")
    decoded = payload_keys + 2  # type, payload
    if colons > decoded:
        decoded += (event.source is not None) + (event.severity is not None)
        decoded += (event.timestamp is not None) + (event.id is not None)
        decoded += event.orderingKey is not None
        if colons > decoded and _key_count(raw) > decoded:
            _refuse_duplicate_keys(raw)
    if event.timestamp is not None:
        event.timestamp = utc(event.timestamp)
    return event


def encode_body(
    type_: Any,
    payload: Any,
    source: Any = None,
    severity: Any = None,
    timestamp: Any = None,
    ordering_key: Any = None,
) -> bytes:
    """The body of ``POST /events`` an HTTP client would send for these arguments (JSON as
    httpx writes it); ValidationError naming the field that cannot be written as JSON.
    What ``EventStream.publish`` and ``Event.emit`` check with ``parse_event``, so they
    accept and refuse what the API does."""
    body: dict[str, Any] = {"type": type_, "payload": payload}
    if source is not None:
        body["source"] = source
    if severity is not None:
        body["severity"] = severity
    if timestamp is not None:
        body["timestamp"] = timestamp.isoformat() if isinstance(timestamp, datetime) else timestamp
    if ordering_key is not None:
        body["orderingKey"] = ordering_key
    try:
        return _dumps(body, ascii_only=False)
    except UnicodeEncodeError:
        # A lone surrogate: written as its \u escape, the API's decoder says what is wrong.
        return _dumps(body, ascii_only=True)
    except (TypeError, ValueError) as exc:
        where = "$"
        for name, value in body.items():
            try:
                _dumps(value, ascii_only=True)
            except (TypeError, ValueError):
                where = f"$.{name}"
                break
        msg = f"cannot be written as JSON: {exc}"
        raise ValidationError(f"invalid event: {where} {msg}", [{"loc": where, "msg": msg}]) from None


def _dumps(value: Any, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), allow_nan=False)
    return text.encode()
