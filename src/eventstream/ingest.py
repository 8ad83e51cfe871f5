"""Validate incoming events, turn them into envelopes, enqueue them atomically.

Shared by the HTTP API and anything else that accepts events. Decoding uses msgspec
(one pass, no intermediate models); every rejection names the field at fault.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import uuid_utils

from eventstream.broker import Broker
from eventstream.errors import PayloadTooLarge, ValidationError
from eventstream.event import Envelope, encode_envelope

TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
KEY_MAX = 256


# No NUL characters in strings stored as text columns: PostgreSQL cannot store them.
NO_NUL = r"^[^\x00]*$"


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
            msgspec.Meta(
                min_length=1,
                max_length=KEY_MAX,
                pattern=NO_NUL,
                description="Client id: makes the post idempotent within the dedupe window.",
            ),
        ]
        | None
    ) = None


class IncomingBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


_event_decoder = msgspec.json.Decoder(IncomingEvent)
_batch_decoder = msgspec.json.Decoder(IncomingBatch)


@dataclass(frozen=True, slots=True)
class Accepted:
    event_id: str
    duplicate: bool


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


def _problem_from_msgspec(exc: msgspec.DecodeError | msgspec.ValidationError) -> ValidationError:
    text = str(exc)
    where = "$"
    if " - at `" in text:
        text, _, rest = text.partition(" - at `")
        where = rest.rstrip("`")
    if isinstance(exc, msgspec.ValidationError):
        return ValidationError(f"invalid event: {text} at {where}", [{"loc": where, "msg": text}])
    return ValidationError(f"body is not valid JSON: {text}", [{"loc": where, "msg": text}])


def _undecodable(exc: UnicodeDecodeError | RecursionError, max_depth: int | None) -> ValidationError:
    """msgspec raises these (not DecodeError) for invalid UTF-8 and for very deep nesting."""
    if isinstance(exc, UnicodeDecodeError):
        return ValidationError(
            "body is not valid JSON: it is not valid UTF-8", [{"loc": "$", "msg": "invalid UTF-8"}]
        )
    if max_depth is None:
        return ValidationError("batch is nested too deeply", [{"loc": "$.events", "msg": "nesting too deep"}])
    return ValidationError(
        f"payload is nested deeper than {max_depth} levels",
        [{"loc": "$.payload", "msg": f"nesting deeper than {max_depth}"}],
    )


def _oversized(value: Any, max_keys: int, max_string: int) -> tuple[str, str] | None:
    """(where, what) of the first object with too many keys or string too long, else None."""
    stack: list[tuple[Any, str]] = [(value, "$.payload")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if len(item) > max_string:
                return where, f"string longer than {max_string} characters"
        elif isinstance(item, dict):
            if len(item) > max_keys:
                return where, f"object with more than {max_keys} keys"
            for k, v in item.items():
                if len(k) > max_string:
                    return where, f"key longer than {max_string} characters"
                stack.append((v, f"{where}.{k[:32]}"))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None


def parse_event(
    raw: bytes, max_depth: int, max_keys: int | None = None, max_string: int | None = None
) -> IncomingEvent:
    """Decode and validate one event; raises ValidationError saying what is wrong.

    ``max_keys`` (keys per object) and ``max_string`` (characters per string or key)
    bound the payload when given."""
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _problem_from_msgspec(exc) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(exc, max_depth) from None
    if event.type.endswith("\n"):  # msgspec uses re.search, whose "$" matches before a final newline
        msg = f"Expected `str` matching regex {TYPE_PATTERN!r}"
        raise ValidationError(f"invalid event: {msg} at $.type", [{"loc": "$.type", "msg": msg}])
    if _depth(event.payload, max_depth) > max_depth:
        raise ValidationError(
            f"payload is nested deeper than {max_depth} levels",
            [{"loc": "$.payload", "msg": f"nesting deeper than {max_depth}"}],
        )
    if max_keys is not None or max_string is not None:
        over = _oversized(event.payload, max_keys or len(raw), max_string or len(raw))
        if over is not None:
            where, what = over
            raise ValidationError(f"payload has an {what} at {where}", [{"loc": where, "msg": what}])
    return event


def parse_batch(raw: bytes, max_batch: int) -> list[msgspec.Raw]:
    try:
        batch = _batch_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _problem_from_msgspec(exc) from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(exc, None) from None
    if not batch.events:
        raise ValidationError(f"batch is empty: send 1 to {max_batch} events")
    if len(batch.events) > max_batch:
        raise PayloadTooLarge(
            f"batch has {len(batch.events)} events; at most {max_batch} are accepted per request"
        )
    return batch.events


def to_envelope(
    event: IncomingEvent,
    idempotency_key: str | None,
    now_ms: int,
    replay_of: str | None = None,
    trace: tuple[str, str | None] | None = None,
) -> tuple[str, bytes, str | None]:
    """(event id, envelope bytes, dedupe key) for the ingest script.

    ``trace``: (traceparent, tracestate) to store, when tracing is on and the POST had one.
    """
    key = idempotency_key if idempotency_key is not None else event.id
    event_id = new_event_id()
    ts = None
    if event.timestamp is not None:
        ts = event.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
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
    )
    if trace is not None:
        env.traceparent, env.tracestate = trace
    return event_id, encode_envelope(env), key


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > KEY_MAX:
        raise ValidationError(
            f"Idempotency-Key header must be 1-{KEY_MAX} characters",
            [{"loc": "header.Idempotency-Key", "msg": "length"}],
        )
    return key


async def enqueue(
    broker: Broker, items: list[tuple[str, bytes, str | None]], dedupe_window_ms: int
) -> list[Accepted]:
    """One atomic script call for all items: dedupe + XADD + counters."""
    if not items:
        return []
    results = await broker.scripts.ingest(broker.redis, items, dedupe_window_ms)
    return [Accepted(event_id, dup) for event_id, dup in results]


Item = tuple[str, bytes, str | None]


class GroupCommit:
    """Enqueue the items of concurrent requests together: one script call for all of them.

    A request's items join the next group; while one group's script call is in
    flight, the next group fills up, so under load each round trip to Redis
    carries many requests and when idle a request goes out at once. The script
    handles items in order, so two concurrent posts with one idempotency key still
    give one event and one duplicate. If the call fails, every request in the group
    gets the error: the script is atomic, so either the whole group was enqueued or
    none of it — and after a timeout or a cut connection the caller cannot know which,
    which is why clients retry with the same Idempotency-Key.
    """

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
            results = await enqueue(
                self.broker, [item for items, _ in group for item in items], self.dedupe_window_ms
            )
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
