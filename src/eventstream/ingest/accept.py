"""Validate incoming events, turn them into envelopes, enqueue them atomically.

Shared by the HTTP API and anything else that accepts events. Decoding uses msgspec
(one pass, no intermediate models); every rejection names the field at fault.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

import msgspec
import uuid_utils

from eventstream.broker import Broker
from eventstream.broker.scripts import Dedupe, IngestItem, Outcome
from eventstream.errors import PartlyEnqueued, PayloadTooLarge, Unconfirmed, ValidationError
from eventstream.event import Envelope, encode_envelope

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


class IncomingBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


_event_decoder = msgspec.json.Decoder(IncomingEvent)
_batch_decoder = msgspec.json.Decoder(IncomingBatch)


Item = tuple[str, bytes, Dedupe | None, str | None]  # id, envelope, dedupe, ordering key


@dataclass(frozen=True, slots=True)
class Accepted:
    """One item's outcome: enqueued, a duplicate (``event_id`` is the first event's), or
    a conflict: its key was used for another event within the dedupe window, so
    nothing was enqueued (answered 422)."""

    event_id: str
    duplicate: bool
    conflict: bool = False


def new_event_id() -> str:
    """A time-ordered unique id (UUIDv7)."""
    return str(uuid_utils.uuid7())


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value: objects and arrays inside one another
    (``{}`` and ``{"a": 1}`` are 1, ``{"a": [1]}`` is 2); stops counting past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue  # a scalar adds no level
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((v, depth + 1) for v in children)
    return deepest


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


def _problem_from_msgspec(
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


def _undecodable(exc: UnicodeDecodeError | RecursionError, max_depth: int | None) -> ValidationError:
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


def _oversized(value: Any, max_keys: int, max_string: int) -> tuple[tuple[str, str] | None, int]:
    """(where, what) of the first object with too many keys or string too long, else None;
    and the number of object keys (every key when nothing is too large)."""
    keys = 0
    stack: list[tuple[Any, str]] = [(value, "$.payload")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if len(item) > max_string:
                return (where, f"string longer than {max_string} characters"), keys
        elif isinstance(item, dict):
            if len(item) > max_keys:
                return (where, f"object with more than {max_keys} keys"), keys
            keys += len(item)
            for k, v in item.items():
                if len(k) > max_string:
                    return (where, f"key longer than {max_string} characters"), keys
                stack.append((v, f"{where}.{k[:32]}"))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None, keys


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
        raise _problem_from_msgspec(exc, raw) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(exc, max_depth) from None
    if event.type.endswith("\n"):  # msgspec uses re.search, whose "$" matches before a final newline
        msg = f"Expected `str` matching regex {TYPE_PATTERN!r}"
        raise ValidationError(f"invalid event: {msg} at $.type", [{"loc": "$.type", "msg": msg}])
    if _depth(event.payload, max_depth) > max_depth:
        raise too_deep(max_depth)
    # With no limits given every size passes, and the walk still counts the keys.
    over, payload_keys = _oversized(event.payload, max_keys or len(raw), max_string or len(raw))
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


def _top_pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs


# \\u0020-\\u007F: a printable ASCII character written as an escape, as no encoder does
# unasked (non-ASCII and control characters are what they escape): the batch's key may
# be spelled that way to hide a repeat.
_ESCAPED_ASCII = re.compile(rb"\\u00[2-7][0-9a-fA-F]")


def _refuse_duplicate_keys_at_top(raw: bytes) -> None:
    """The batch object's own keys only: a repeat inside an item refuses that item alone."""
    try:
        top = json.loads(raw, object_pairs_hook=_top_pairs)
    except RecursionError:
        raise ValidationError(
            "batch is nested too deeply", [{"loc": "$.events", "msg": "nesting too deep"}]
        ) from None
    names = [k for k, _ in top] if isinstance(top, list) else []
    if len(set(names)) < len(names):
        msg = "duplicate key 'events' in the batch object: send one list of events"
        raise ValidationError(f"body is not valid: {msg}", [{"loc": "$", "msg": msg}])


def parse_batch(raw: bytes, max_batch: int) -> list[msgspec.Raw]:
    try:
        batch = _batch_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _problem_from_msgspec(exc, raw) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(exc, None) from None
    if raw.count(b'"events"') > 1 or _ESCAPED_ASCII.search(raw):  # "events" twice, or escaped
        _refuse_duplicate_keys_at_top(raw)
    if not batch.events:
        raise ValidationError(f"batch is empty: send 1 to {max_batch} events")
    if len(batch.events) > max_batch:
        raise PayloadTooLarge(
            f"batch has {len(batch.events)} events; at most {max_batch} are accepted per request"
        )
    return batch.events


def fingerprint(event: IncomingEvent) -> bytes:
    """8 characters (48 bits, base64url) that tell one event's content (all but its
    ``id``, which names it) from another's, however it was written (key order, spacing,
    escapes, the time zone of ``timestamp``): what a dedupe record keeps to tell a
    repeat from a reuse of its key for another event."""
    ts = None if event.timestamp is None else utc(event.timestamp)
    content: tuple[Any, ...] = (event.type, event.payload, event.source, event.severity, ts)
    if event.orderingKey is not None:  # the records of events without one keep their prints
        content += (event.orderingKey,)
    canonical = msgspec.json.encode(content, order="deterministic")
    return base64.urlsafe_b64encode(hashlib.blake2b(canonical, digest_size=6).digest())


def to_envelope(
    event: IncomingEvent,
    idempotency_key: str | None,
    now_ms: int,
    replay_of: str | None = None,
    trace: tuple[str, str | None] | None = None,
    namespace: str | None = None,
) -> Item:
    """(event id, envelope bytes, dedupe record or None, ordering key or None) for the
    ingest script.

    ``idempotency_key`` (else the event's own ``id``) makes it idempotent within
    ``namespace`` (None: the anonymous one; see eventstream.broker.keys).
    ``trace``: (traceparent, tracestate) to store, when tracing is on and the POST had one.
    """
    key = idempotency_key if idempotency_key is not None else event.id
    event_id = new_event_id()
    ts = None
    if event.timestamp is not None:
        ts = utc(event.timestamp).isoformat().replace("+00:00", "Z")
    env = Envelope(
        id=event_id,
        type=event.type,
        payload=event.payload,
        receivedAt=now_ms,
        source=event.source,
        severity=event.severity,
        timestamp=ts,
        idempotencyKey=key,
        replayOf=replay_of,
        orderingKey=event.orderingKey,
    )
    if trace is not None:
        env.traceparent, env.tracestate = trace
    dedupe = None if key is None else Dedupe(key, namespace, fingerprint(event))
    return event_id, encode_envelope(env), dedupe, event.orderingKey


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > KEY_MAX:
        raise ValidationError(
            f"Idempotency-Key header must be 1-{KEY_MAX} characters",
            [{"loc": "header.Idempotency-Key", "msg": "length"}],
        )
    return key


def batch_item_keys(header: str | None, n: int) -> list[str] | None:
    """The idempotency keys a batch's Idempotency-Key gives its ``n`` items: ``<key>:<index>``
    (so one item may be retried alone as a POST /events with its key)."""
    key = check_idempotency_key(header)
    if key is None:
        return None
    longest = KEY_MAX - 1 - len(str(n - 1))
    if len(key) > longest:
        msg = f"at most {longest} characters on a batch of {n} events: each item's key is <key>:<index>"
        raise ValidationError(
            f"Idempotency-Key header is too long for a batch: {msg}",
            [{"loc": "header.Idempotency-Key", "msg": msg}],
        )
    return [f"{key}:{i}" for i in range(n)]


def conflict_message(source: str) -> str:
    """The 422 detail when an idempotency key (``source``: where it came from) was used
    within the dedupe window for an event with other content."""
    return (
        f"the idempotency key ({source}) was already used for a different event within the dedupe "
        "window; nothing was queued. Send the same event to get its result, or a new key for a new event"
    )


async def enqueue(broker: Broker, items: Sequence[IngestItem], dedupe_window_ms: int) -> list[Accepted]:
    """One atomic script call for all items: dedupe + XADD + counters. A plain string
    as the dedupe record is a key in the anonymous namespace that any content repeats
    (replays use that)."""
    try:
        return await enqueue_partly(broker, items, dedupe_window_ms)
    except PartlyEnqueued as exc:  # for one caller, a failure is a failure
        raise exc.error from exc


async def enqueue_partly(
    broker: Broker, items: Sequence[IngestItem], dedupe_window_ms: int
) -> list[Accepted]:
    """``enqueue``, but when some partitions failed and others ran, PartlyEnqueued with
    each item's Accepted (None: its partition failed): group commit answers each request
    from its own items."""
    if not items:
        return []
    try:
        results = await broker.enqueue(items, dedupe_window_ms)
    except Unconfirmed as exc:  # queued, not confirmed: the same error, with Accepted results
        raise Unconfirmed(exc.detail, _accepted(exc.results)) from exc
    except PartlyEnqueued as exc:
        raise PartlyEnqueued(exc.error, _accepted(exc.results), exc.confirmed, exc.detail) from exc
    return [a for a in _accepted(results) if a is not None]


def _accepted(results: Sequence[tuple[str, Outcome] | None]) -> list[Any]:
    return [
        None if r is None else Accepted(r[0], r[1] is Outcome.DUPLICATE, r[1] is Outcome.CONFLICT)
        for r in results
    ]


class Publication(Protocol):
    """How a request's events are submitted: the same call with tracing on or off.

    ``GroupCommit`` itself when there is nothing to trace; with tracing on and a trace
    context in the request, ``eventstream.ingest.tracing.Publish`` (the submit runs in the
    request's publish span, and ``context`` is stored with each event).
    """

    @property
    def context(self) -> tuple[str, str | None] | None: ...

    async def submit(self, items: list[Item]) -> list[Accepted]: ...


class GroupCommit:
    """Enqueue the items of concurrent requests together: one script call for all of them.

    A request's items join the next group; while one group's script call is in
    flight, the next group fills up, so under load each round trip to Redis
    carries many requests and when idle a request goes out at once. The script
    handles items in order, so two concurrent posts with one idempotency key still
    give one event and one duplicate. With several partitions the call is one script per
    partition: each is atomic, and when some fail (their node down, their slot moving)
    while others run, each request is answered from its own items: enqueued when all of
    its partitions ran, else the error (its other items may be queued: that is why
    clients retry with the same Idempotency-Key, as after a timeout or a cut connection,
    when the caller cannot know what was applied).
    """

    # As a Publication: events submitted straight, with no trace context to store.
    context: tuple[str, str | None] | None = None

    def __init__(self, broker: Broker, dedupe_window_ms: int, max_items: int = 2000) -> None:
        self.broker = broker
        self.dedupe_window_ms = dedupe_window_ms
        self.max_items = max_items
        self._waiting: deque[tuple[list[Item], asyncio.Future[list[Accepted]]]] = deque()
        self._running = False

    async def submit(self, items: list[Item]) -> list[Accepted]:
        if not items:
            return []
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group: list[tuple[list[Item], asyncio.Future[list[Accepted]]]] = []
                size = 0
                while self._waiting and (not group or size + len(self._waiting[0][0]) <= self.max_items):
                    items, future = self._waiting.popleft()
                    group.append((items, future))
                    size += len(items)
                await self._commit(group)
        finally:
            self._running = False

    async def _commit(self, group: list[tuple[list[Item], asyncio.Future[list[Accepted]]]]) -> None:
        try:
            results = await enqueue_partly(
                self.broker, [item for items, _ in group for item in items], self.dedupe_window_ms
            )
        except Unconfirmed as exc:  # each request learns its own events' outcomes
            start = 0
            for items, future in group:
                if not future.done():
                    future.set_exception(Unconfirmed(exc.detail, exc.results[start : start + len(items)]))
                start += len(items)
            return
        except PartlyEnqueued as exc:  # a request whose partitions all ran gets its outcomes
            start = 0
            for items, future in group:
                mine = exc.results[start : start + len(items)]
                start += len(items)
                if future.done():
                    continue
                if any(r is None for r in mine):
                    future.set_exception(exc.error)
                elif not exc.confirmed:
                    future.set_exception(Unconfirmed(exc.detail, mine))
                else:
                    future.set_result(mine)
            return
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for items, future in group:
            if not future.done():
                future.set_result(results[start : start + len(items)])
            start += len(items)


def now_ms() -> int:
    return time.time_ns() // 1_000_000
