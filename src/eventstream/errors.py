"""EventStream's exceptions: one tree under EventStreamError.

    EventStreamError
    ├── ConfigError            a setting is missing or wrong; raised at start
    │   ├── SchemaError        the store's schema is not the one this code needs
    │   └── PartitionCountMismatch  EVENTSTREAM_PARTITIONS is not the deployment's (also -> 503)
    ├── RedisUnsafeError       the Redis server could lose events (refused only when asked)
    ├── ValidationError        a client sent something that cannot be accepted (-> 4xx)
    │   └── PayloadTooLarge    the body or batch is over its limit (-> 413)
    ├── NotFound               no such event / DLQ entry (-> 404)
    ├── AuthError              the request's credentials do not allow it
    │   ├── Unauthorized       no API key, or an unknown or revoked one (-> 401)
    │   └── Forbidden          the key's scope does not allow the request (-> 403)
    ├── RateLimited            the key's or client's rate limit is spent (-> 429)
    ├── PartlyEnqueued         some partitions of one enqueue failed: each item's outcome
    ├── Unavailable            the service cannot serve now; the client may retry (-> 503)
    │   ├── Unconfirmed        enqueued, but not confirmed by the replicas asked for in time
    │   └── BackendUnavailable Redis or the store failed in a way waiting can cure
    │       ├── RedisUnavailable   refused, reset, loading, a replica not yet promoted
    │       │   └── RedisTimeout   no reply in time: the command may still be applied
    │       └── StoreUnavailable   refused, cut mid-statement, locked, out of connections
    ├── BackendError           Redis or the store refused a request; waiting cannot cure it
    ├── UnexpectedResponse     a Client got an answer the API never gives (a 3xx, a 418, not JSON)
    ├── BufferFull             a Client's background buffer is full (``enqueue``; nothing was added)
    └── PermanentError         raised BY A HANDLER: do not retry, dead-letter now

``BackendUnavailable`` and ``BackendError`` are made from redis-py's and SQLAlchemy's
exceptions at the edges (``Broker``, ``SqlStore``), by the one table in
``eventstream.backend_errors``; the original is their ``__cause__``. Nothing above
the edges names a driver's exception.

The producers (``Client``, ``AsyncClient``) raise these from the API's answers; every
exception they raise carries ``status`` (the HTTP status; 0 when no answer came) and
``problem`` (the parsed problem+json body, or ``{}``).

Handlers raise any exception to ask for a retry; ``PermanentError`` skips the
retries. ``Retry`` (not an error) asks for a retry after a given delay.
"""

from __future__ import annotations

from typing import Any


class EventStreamError(Exception):
    """Root of every exception EventStream raises.

    ``status`` and ``problem`` are set on the exceptions a ``Client`` raises from an HTTP
    answer: the status code and the problem+json body (``{}`` when it had none)."""

    status: int
    problem: dict[str, Any]


class ConfigError(EventStreamError):
    """A setting is missing or invalid."""


class SchemaError(ConfigError):
    """The database schema is behind (or ahead of) the migrations of this version."""

    def __init__(self, detail: str, current: str | None, needed: str) -> None:
        super().__init__(detail)
        self.current = current
        self.needed = needed


class RedisUnsafeError(EventStreamError):
    """The Redis server is configured in a way that can lose events."""


class ValidationError(EventStreamError):
    """Client input that cannot be accepted. ``errors`` lists what is wrong, by location."""

    status = 422

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class PayloadTooLarge(ValidationError):
    status = 413


class NotFound(EventStreamError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.what = what
        self.ident = ident


class AuthError(EventStreamError):
    """The request's credentials do not allow it: ``Unauthorized`` or ``Forbidden``."""


class Unauthorized(AuthError):
    """No valid API key: 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, detail: str, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


class Forbidden(AuthError):
    """A valid key whose scope does not cover the request."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RateLimited(EventStreamError):
    """Over a rate limit: 429 with ``Retry-After`` and ``RateLimit-*`` headers; nothing was done."""

    def __init__(self, detail: str, retry_after_s: int, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.headers = headers


class Unavailable(EventStreamError):
    """A backing service (Redis, the store) is unreachable; the client may retry."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class PartitionCountMismatch(ConfigError, Unavailable):
    """EVENTSTREAM_PARTITIONS differs from the count recorded for the deployment in
    Redis: the process refuses to start, or (when Redis was unreachable at its start)
    to accept events, answering 503 until it is configured like the deployment."""

    def __init__(self, detail: str) -> None:
        Unavailable.__init__(self, detail, retry_after_s=30)


class Unconfirmed(Unavailable):
    """Events were enqueued, but fewer replicas (or AOF fsyncs) than the settings ask for
    confirmed them in time: a failover now could lose them. ``results`` holds each
    item's outcome as the enqueue gave it (they are queued: a retry with the same
    idempotency key is a duplicate)."""

    def __init__(self, detail: str, results: list[Any]) -> None:
        super().__init__(detail, retry_after_s=1)
        self.results = results


class PartlyEnqueued(EventStreamError):
    """An enqueue over several partitions where some partitions' scripts ran and others
    failed (their node down, their slot moving): ``error`` is the failure (already one
    of ours), ``results`` each item's outcome, None for the items of the partitions that
    failed. ``confirmed``: the replicas asked for (EVENTSTREAM_REDIS_WAIT_*) confirmed
    the items that were enqueued (True when none are asked for). Group commit answers
    each request from its own items' outcomes."""

    def __init__(self, error: Exception, results: list[Any], confirmed: bool, detail: str = "") -> None:
        super().__init__(str(error))
        self.error = error
        self.results = results
        self.confirmed = confirmed
        self.detail = detail  # why unconfirmed, when not confirmed


class BackendUnavailable(Unavailable):
    """Redis or the store failed in a way waiting can cure: the API answers 503 with
    ``Retry-After``, a worker backs off and tries again, a periodic job skips a round.

    ``str()`` says what failed, for logs and operators; ``detail`` is what an HTTP
    client is told (no addresses, no driver messages)."""

    what = "cannot reach Redis or the store"
    detail = "a backing service (Redis or the store) is unreachable; nothing was changed, retry later"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        EventStreamError.__init__(self, message)
        self.retry_after_s = retry_after_s


class RedisUnavailable(BackendUnavailable):
    what = "cannot reach Redis"


class RedisTimeout(RedisUnavailable):
    """Redis did not answer in time. The command may have reached it and be applied once
    it answers again: repeat it only where that is safe (ingest: with an idempotency key)."""

    what = "Redis did not answer in time"
    detail = (
        "Redis did not answer in time; the request may or may not have been applied: "
        "retry later with the same Idempotency-Key to be told which"
    )


class StoreUnavailable(BackendUnavailable):
    what = "cannot reach the store"


class BackendError(EventStreamError):
    """Redis or the store refused a request in a way waiting cannot cure: a bug, or a
    misconfiguration (a command error, a broken constraint, a permission). Not retried."""


class UnexpectedResponse(EventStreamError):
    """An answer the EventStream API never gives (a redirect, a 418, a body that is not
    the JSON expected): something else answered at that URL, or a proxy in between."""

    def __init__(self, detail: str, status: int, problem: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.problem = problem or {}


class BufferFull(EventStreamError):
    """``enqueue`` found the client's background buffer full (``max_queue`` events waiting)
    and could not wait (``on_full="raise"``) or waited ``full_timeout_s`` in vain: the
    event was not added. ``pending`` is how many were waiting."""

    def __init__(self, detail: str, pending: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pending = pending
        self.status = 0
        self.problem = {}


class PermanentError(EventStreamError):
    """Raise from a handler to send the event to the DLQ without further retries."""


class Retry(Exception):
    """Raise from a handler to retry the event after ``delay`` seconds (counts as an attempt)."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
