"""EventStream: durable event processing on Redis Streams.

Users import from here only::

    from eventstream import EventStream, Event, PermanentError, Retry
    from eventstream import Client, AsyncClient    # producers over HTTP

``Client``, ``AsyncClient`` and ``Undelivered`` are imported on first use: a worker that never sends over
HTTP does not pay for importing httpx.
"""

from typing import TYPE_CHECKING, Any

from eventstream.app import EventStream
from eventstream.errors import (
    AuthError,
    BufferFull,
    EventStreamError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    Retry,
    Unauthorized,
    Unavailable,
    UnexpectedResponse,
    ValidationError,
)
from eventstream.event import Event
from eventstream.results import Accepted, Rejected
from eventstream.version import __version__

if TYPE_CHECKING:
    from eventstream.client import AsyncClient, Client, Undelivered

_LAZY = frozenset({"Client", "AsyncClient", "Undelivered"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from eventstream import client

        return getattr(client, name)
    raise AttributeError(f"module 'eventstream' has no attribute {name!r}")


__all__ = [
    "Accepted",
    "AsyncClient",
    "AuthError",
    "BufferFull",
    "Client",
    "Event",
    "EventStream",
    "EventStreamError",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "PermanentError",
    "RateLimited",
    "Rejected",
    "Retry",
    "Unauthorized",
    "Unavailable",
    "Undelivered",
    "UnexpectedResponse",
    "ValidationError",
    "__version__",
]
