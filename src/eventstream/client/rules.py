"""The producers' rules without I/O: what to send, when to try again, what an answer means.

``Client`` and ``AsyncClient`` share this one implementation. Each call is a *plan*: a
generator that yields a :class:`Call` (send this) or a :class:`Sleep` (wait this long)
and is sent back the answer (an ``httpx.Response``, or the ``httpx.RequestError`` the
send raised); it returns the result or raises one of EventStream's exceptions. The
clients only do the sending and the sleeping.

The rules:

- every send carries an idempotency key: the caller's, or a uuid4 made once per
  logical send and reused by each of its retries (``send``: the ``Idempotency-Key``
  header; ``send_batch``: each item's body ``id``), so a retry can never enqueue twice;
- retried, with exponential backoff and full jitter, waiting at least ``Retry-After``:
  transport failures (refused, reset, timed out, closed before the reply) and 408,
  429, 500, 502, 503, 504; until ``max_attempts`` tries or ``retry_budget_s`` seconds;
- never retried: any other answer (400, 401, 403, 404, 409, 413, 422, ...);
- a duplicate answer to a retry of a send whose key the client made is its own earlier
  try getting through: reported as ``duplicate=False``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from eventstream.errors import (
    EventStreamError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    ValidationError,
)
from eventstream.results import Accepted, Rejected
from eventstream.version import __version__

T = TypeVar("T")
E = TypeVar("E", bound=EventStreamError)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The request never left: repeating it is safe whatever it does.
NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# It may have been done, and the answer lost: repeated only where that is safe.
TRANSIENT: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
BATCH_OVERHEAD = len(b'{"events":[]}')
SHOWN_BODY_CHARS = 200


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to make. ``idempotent``: doing it twice does no harm (ingest
    with its key, reads); otherwise it is repeated only when it surely never left
    (refused connection) or was refused at once (429)."""

    method: str
    path: str
    params: dict[str, str | int] | None = None
    headers: dict[str, str] | None = None
    content: bytes | None = None
    idempotent: bool = True
    names: tuple[str, str] = ("resource", "")  # what a 404 says was not found


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


Step = Call | Sleep
Reply = httpx.Response | httpx.RequestError | None
Plan = Generator[Step, Reply, T]


@dataclass(frozen=True, slots=True)
class Options:
    """The clients' options (see ``Client``)."""

    timeout_s: float = 10.0
    max_attempts: int = 6
    retry_budget_s: float = 30.0
    retry_base_s: float = 0.1
    retry_max_delay_s: float = 5.0
    max_batch: int = 1000
    max_body_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_batch < 1:
            raise ValueError("max_attempts and max_batch must be at least 1")
        if min(self.timeout_s, self.retry_base_s, self.retry_max_delay_s, self.retry_budget_s) < 0:
            raise ValueError("timeouts, delays and the retry budget cannot be negative")
        if self.max_body_bytes <= BATCH_OVERHEAD:
            raise ValueError(f"max_body_bytes must be more than {BATCH_OVERHEAD}")

    def backoff_s(self, attempt: int) -> float:
        """Full jitter: anywhere from 0 to base * 2^(attempt-1), capped."""
        cap = min(self.retry_max_delay_s, self.retry_base_s * 2 ** min(attempt - 1, 60))
        return random.uniform(0, cap)


def base_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"eventstream-python/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def check_base_url(base_url: str) -> str:
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
    return base_url.rstrip("/")


# ---- answers -------------------------------------------------------------------------


def _shown(response: httpx.Response) -> str:
    text = response.text.strip()
    return f": {text[:SHOWN_BODY_CHARS]!r}" if text else " with an empty body"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def problem_of(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    return body if isinstance(body, dict) else {}


def _errors(problem: Mapping[str, Any]) -> list[dict[str, str]]:
    raw = problem.get("errors")
    if not isinstance(raw, list):
        return []
    return [{str(k): str(v) for k, v in e.items()} for e in raw if isinstance(e, dict)]


def retry_after_s(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds: a number of seconds, or an HTTP date; None if absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if value.isascii() and value.isdigit() and len(value) <= 10:
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_for(response: httpx.Response, names: tuple[str, str] = ("resource", "")) -> EventStreamError:
    """The exception an unsuccessful answer stands for, with ``status`` and ``problem``."""
    status = response.status_code
    problem = problem_of(response)
    detail = problem.get("detail")
    if not isinstance(detail, str) or not detail:
        detail = f"HTTP {status} {response.reason_phrase}{_shown(response)}"
    wait = math.ceil(retry_after_s(response.headers) or 1)
    exc: EventStreamError
    if status in (400, 422):
        exc = ValidationError(detail, _errors(problem))
    elif status == 413:
        exc = PayloadTooLarge(detail, _errors(problem))
    elif status == 401:
        exc = Unauthorized(detail, "invalid_token" in response.headers.get("www-authenticate", ""))
    elif status == 403:
        exc = Forbidden(detail)
    elif status == 404:
        exc = NotFound(*names)
        if problem.get("detail") == detail:  # the server's words say more (where the event is now)
            exc.args = (detail,)
    elif status == 429:
        exc = RateLimited(detail, wait, dict(response.headers))
    elif status >= 500:
        exc = Unavailable(detail, wait)
    else:
        exc = UnexpectedResponse(
            f"unexpected answer from {response.request.url}: HTTP {status} {response.reason_phrase}"
            f"{_shown(response)}",
            status,
            problem,
        )
    return _stamped(exc, status, problem)


def _stamped(exc: E, status: int, problem: dict[str, Any]) -> E:
    """``exc`` with the HTTP status it stands for (0: there was no answer) and the body."""
    exc.status = status
    exc.problem = problem
    return exc


def _unexpected(response: httpx.Response, what: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        f"unexpected answer from {response.request.url} (HTTP {response.status_code}): {what}"
        f"{_shown(response)}",
        response.status_code,
        problem_of(response),
    )


def json_object(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    if not isinstance(body, dict):
        raise _unexpected(response, "the body is not a JSON object")
    return body


def _where(exc: httpx.RequestError) -> object:
    try:
        return exc.request.url
    except RuntimeError:  # raised before a request was made
        return "the API"


def _transport_failure(exc: httpx.TransportError) -> Unavailable:
    where = _where(exc)
    return _stamped(
        Unavailable(f"cannot reach the EventStream API at {where}: {type(exc).__name__}: {exc}"), 0, {}
    )


# ---- the retry loop ------------------------------------------------------------------


def exchange(
    call: Call, options: Options, clock: Callable[[], float] = time.monotonic
) -> Plan[tuple[httpx.Response, int]]:
    """Make ``call`` until it gets a final answer: the 2xx response and the number of
    the try that got it; else raise what the last answer (or failure) stands for."""
    start = clock()
    attempt = 0
    while True:
        attempt += 1
        reply = yield call
        wait_at_least = 0.0
        if isinstance(reply, httpx.Response):
            if reply.is_success:
                return reply, attempt
            error: EventStreamError = error_for(reply, call.names)
            status = reply.status_code
            retry = status in RETRY_STATUSES and (call.idempotent or status == 429)
            wait_at_least = retry_after_s(reply.headers) or 0.0
        elif isinstance(reply, httpx.TransportError):
            error = _transport_failure(reply)
            retry = isinstance(reply, NOT_SENT) or (call.idempotent and isinstance(reply, TRANSIENT))
        elif isinstance(reply, httpx.RequestError):  # e.g. a body that does not decode (gzip)
            raise UnexpectedResponse(f"unreadable answer from {_where(reply)}: {reply}", 0) from reply
        else:  # the client broke the protocol of plans
            raise TypeError(f"a plan was sent {reply!r}, not a response")
        delay = max(options.backoff_s(attempt), wait_at_least)
        spent = clock() - start
        if not retry or attempt >= options.max_attempts or spent + delay > options.retry_budget_s:
            if isinstance(reply, httpx.RequestError):
                raise error from reply
            raise error
        yield Sleep(delay)


# ---- the calls -----------------------------------------------------------------------


def _encode(value: Any, what: str) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"{what} cannot be sent as JSON: {exc}") from None


def _iso(timestamp: datetime | str) -> str:
    if isinstance(timestamp, str):
        return timestamp
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        msg = "timestamp must be timezone-aware, e.g. datetime.now(UTC)"
        raise _stamped(ValidationError(msg, [{"loc": "$.timestamp", "msg": "no time zone"}]), 422, {})
    return timestamp.isoformat()


def _accepted(response: httpx.Response, own_retry: bool) -> Accepted:
    body = json_object(response)
    event_id = body.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        raise _unexpected(response, "no eventId in the answer")
    duplicate = body.get("duplicate") is True and not own_retry
    return Accepted(event_id, duplicate)


def event_body(
    type: str,
    payload: Mapping[str, Any],
    *,
    ordering_key: str | None,
    source: str | None,
    severity: str | None,
    timestamp: datetime | str | None,
) -> dict[str, Any]:
    """One event in the HTTP body form (without its key)."""
    body: dict[str, Any] = {"type": type, "payload": payload}
    optional = {"source": source, "severity": severity, "orderingKey": ordering_key}
    body.update((k, v) for k, v in optional.items() if v is not None)
    if timestamp is not None:
        body["timestamp"] = _iso(timestamp)
    return body


TOO_LARGE = {"loc": "$", "msg": "too large"}


def _too_large(size: int, options: Options) -> str:
    return f"the event is {size} bytes as JSON; a request may have {options.max_body_bytes}"


def batch_item(options: Options, body: Mapping[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    """``body`` as a batch item with its ``id`` (the caller's key, or a new one), checked as
    ``send_batch`` would: JSON-encodable (else TypeError) and small enough for one request
    (else PayloadTooLarge)."""
    item = {**body, "id": idempotency_key if idempotency_key is not None else str(uuid.uuid4())}
    size = len(_encode(item, "the event"))
    if BATCH_OVERHEAD + size > options.max_body_bytes:
        raise _stamped(PayloadTooLarge(_too_large(size, options), [{**TOO_LARGE}]), 413, {})
    return item


def send(
    options: Options,
    type: str,
    payload: Mapping[str, Any],
    *,
    idempotency_key: str | None,
    ordering_key: str | None,
    source: str | None,
    severity: str | None,
    timestamp: datetime | str | None,
) -> Plan[Accepted]:
    body = event_body(
        type, payload, ordering_key=ordering_key, source=source, severity=severity, timestamp=timestamp
    )
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
    call = Call("POST", "/events", headers=headers, content=_encode(body, "the event"))
    response, attempt = yield from exchange(call, options)
    return _accepted(response, own_retry=idempotency_key is None and attempt > 1)


@dataclass(slots=True)
class Chunk:
    """Items sent in one POST /events/batch: their positions in the caller's list, their
    encoded bodies, and whether the client made each one's ``id``."""

    indexes: list[int] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    generated: list[bool] = field(default_factory=list)
    size: int = BATCH_OVERHEAD

    def add(self, index: int, body: bytes, generated: bool) -> None:
        self.size += len(body) + (1 if self.bodies else 0)
        self.indexes.append(index)
        self.bodies.append(body)
        self.generated.append(generated)

    def halves(self) -> tuple[Chunk, Chunk]:
        """The first and the second half of this chunk's items."""
        middle = len(self.bodies) // 2
        parts = (Chunk(), Chunk())
        for n, (i, body, generated) in enumerate(zip(self.indexes, self.bodies, self.generated, strict=True)):
            parts[n >= middle].add(i, body, generated)
        return parts

    def call(self) -> Call:
        content = b'{"events":[' + b",".join(self.bodies) + b"]}"
        return Call("POST", "/events/batch", headers={"Content-Type": "application/json"}, content=content)


def split(events: Sequence[Mapping[str, Any]], options: Options) -> tuple[list[Chunk], list[Rejected]]:
    """The requests a batch is sent in (each within max_batch and max_body_bytes), and
    the items too large for any request. Items without an ``id`` get a new one (copies:
    the caller's dicts are left as they are)."""
    chunks: list[Chunk] = []
    too_large: list[Rejected] = []
    chunk = Chunk()
    for i, item in enumerate(events):
        if not isinstance(item, Mapping):
            raise TypeError(f"events[{i}] is a {type(item).__name__}, not a dict")
        generated = item.get("id") is None
        body = _encode({**item, "id": str(uuid.uuid4())} if generated else item, f"events[{i}]")
        if BATCH_OVERHEAD + len(body) > options.max_body_bytes:
            too_large.append(Rejected(i, 413, _too_large(len(body), options), ({**TOO_LARGE},)))
            continue
        if chunk.bodies and (
            len(chunk.bodies) >= options.max_batch or chunk.size + 1 + len(body) > options.max_body_bytes
        ):
            chunks.append(chunk)
            chunk = Chunk()
        chunk.add(i, body, generated)
    if chunk.bodies:
        chunks.append(chunk)
    return chunks, too_large


def _item_results(response: httpx.Response, chunk: Chunk, own_retry: bool) -> list[Accepted | Rejected]:
    results = json_object(response).get("results")
    if not isinstance(results, list) or len(results) != len(chunk.indexes):
        raise _unexpected(response, f"not a list of {len(chunk.indexes)} results")
    out: list[Accepted | Rejected] = []
    for j, r in enumerate(results):
        status = r.get("status") if isinstance(r, dict) else None
        if not isinstance(r, dict) or not isinstance(status, int) or isinstance(status, bool):
            raise _unexpected(response, f"result {j} has no status")
        if 200 <= status < 300:
            event_id = r.get("eventId")
            if not isinstance(event_id, str) or not event_id:
                raise _unexpected(response, f"result {j} has no eventId")
            own = own_retry and chunk.generated[j]
            out.append(Accepted(event_id, r.get("duplicate") is True and not own))
        else:
            detail = r.get("error", r.get("detail"))
            out.append(Rejected(chunk.indexes[j], status, str(detail or f"HTTP {status}"), tuple(_errors(r))))
    return out


def send_batch(options: Options, events: Sequence[Mapping[str, Any]]) -> Plan[list[Accepted | Rejected]]:
    chunks, too_large = split(events, options)
    results: dict[int, Accepted | Rejected] = {r.index: r for r in too_large}
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        try:
            response, attempt = yield from exchange(chunk.call(), options)
        except PayloadTooLarge as exc:
            if len(chunk.indexes) > 1:  # the server's limits are below ours: halve, send again
                chunks += reversed(chunk.halves())
                continue
            results[chunk.indexes[0]] = Rejected(chunk.indexes[0], exc.status, exc.detail, tuple(exc.errors))
            continue
        except ValidationError as exc:  # the server refused the whole request: each item, here
            for i in chunk.indexes:
                results[i] = Rejected(i, exc.status, exc.detail, tuple(exc.errors))
            continue
        own_retry = attempt > 1
        results.update(zip(chunk.indexes, _item_results(response, chunk, own_retry), strict=True))
    return [results[i] for i in range(len(events))]


def get(options: Options, event_id: str) -> Plan[dict[str, Any]]:
    if not event_id:
        raise ValueError("event_id is empty")
    call = Call("GET", f"/events/{quote(event_id, safe='')}", names=("event", event_id))
    response, _ = yield from exchange(call, options)
    return json_object(response)


def failed_page(
    options: Options, type: str | None, limit: int, cursor: str | None
) -> Plan[tuple[list[dict[str, Any]], str | None]]:
    params: dict[str, str | int] = {"limit": limit}
    if type is not None:
        params["type"] = type
    if cursor is not None:
        params["cursor"] = cursor
    response, _ = yield from exchange(Call("GET", "/failed-events", params=params), options)
    body = json_object(response)
    items, nxt = body.get("items"), body.get("nextCursor")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _unexpected(response, "no list of items")
    if nxt is not None and (not isinstance(nxt, str) or nxt == cursor):
        raise _unexpected(response, "a nextCursor that leads nowhere")
    return items, nxt


def replay_dead(options: Options, event_id: str | None, type: str | None) -> Plan[dict[str, Any]]:
    if event_id is not None:
        if not event_id or type is not None:
            raise ValueError("give an event_id, or a type (or neither: every dead event), not both")
        path = f"/failed-events/{quote(event_id, safe='')}/replay"
        call = Call("POST", path, idempotent=False, names=("dead event", event_id))
    else:
        params: dict[str, str | int] | None = None if type is None else {"type": type}
        call = Call("POST", "/failed-events/replay", params=params, idempotent=False)
    response, _ = yield from exchange(call, options)
    return json_object(response)
