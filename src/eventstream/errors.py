"""EventStream's exceptions: one tree under EventStreamError.

    EventStreamError
    ├── ConfigError            a setting is missing or wrong; raised at start
    │   └── SchemaError        the store's schema is not the one this code needs
    ├── RedisUnsafeError       the Redis server could lose events (refused only when asked)
    ├── ValidationError        a client sent something that cannot be accepted (-> 4xx)
    │   └── PayloadTooLarge    the body or batch is over its limit (-> 413)
    ├── NotFound               no such event / DLQ entry (-> 404)
    ├── Unauthorized           no API key, or an unknown or revoked one (-> 401)
    ├── Forbidden              the key's scope does not allow the request (-> 403)
    ├── RateLimited            the key's or client's rate limit is spent (-> 429)
    ├── Unavailable            Redis or the store cannot be reached (-> 503)
    └── PermanentError         raised BY A HANDLER: do not retry, dead-letter now

Handlers raise any exception to ask for a retry; ``PermanentError`` skips the
retries. ``Retry`` (not an error) asks for a retry after a given delay.
"""

from __future__ import annotations


class EventStreamError(Exception):
    """Root of every exception EventStream raises."""


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


class Unauthorized(EventStreamError):
    """No valid API key: 401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, detail: str, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


class Forbidden(EventStreamError):
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


class PermanentError(EventStreamError):
    """Raise from a handler to send the event to the DLQ without further retries."""


class Retry(Exception):
    """Raise from a handler to retry the event after ``delay`` seconds (counts as an attempt)."""

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
