"""Which failures of a backing service (Redis, the store) are transient: one table.

A transient failure is one that waiting can cure: a connection refused, reset or cut
mid-statement, a server loading its data or shutting down, a reply that did not come
in time, a replica not yet promoted. The API answers them with 503 and
``Retry-After``; the worker backs off and tries again, never exits; every maintenance
loop skips a round. Anything else is a bug or a misconfiguration and is not retried.
"""

from __future__ import annotations

import sqlalchemy.exc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

# ConnectionError and TimeoutError are OSError's; redis-py's BusyLoadingError is a
# ConnectionError; ReadOnlyError: a failover has not finished.
REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisReadOnlyError,
    OSError,
)
STORE_TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
)
TRANSIENT = REDIS_TRANSIENT + STORE_TRANSIENT

# SQLSTATE classes and codes of a lost or refused connection: 08 connection exception,
# 57P01-57P03 server shutting down or starting, 53300 too many connections.
_LOST_SQLSTATE_CLASSES = ("08",)
_LOST_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again can cure ``exc``."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        # A connection cut mid-statement reaches SQLAlchemy as a plain DBAPIError
        # (asyncpg: "connection was closed in the middle of operation", SQLSTATE 08003).
        return exc.connection_invalidated or _lost_connection(exc.orig)
    return False


def _lost_connection(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 8:  # the driver's error and what caused it
        if isinstance(error, OSError):
            return True
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and (state.startswith(_LOST_SQLSTATE_CLASSES) or state in _LOST_SQLSTATES):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False
