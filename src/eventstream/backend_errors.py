"""Backend errors translated once, at the edge: redis-py's and SQLAlchemy's exceptions
become EventStream's (``eventstream.errors``), by one table per backend.

``Broker`` and ``SqlStore`` are decorated with :func:`translated`, so whatever calls
them (the API, the worker, retention, the CLI) sees only EventStream's types:

- :class:`~eventstream.errors.BackendUnavailable` (``RedisUnavailable``,
  ``RedisTimeout``, ``StoreUnavailable``): waiting can cure it — a connection refused,
  reset or cut mid-statement, a server loading its data or shutting down, a reply that
  did not come in time, a replica not yet promoted (a Redis Cluster down or moving a
  slot among them), a database locked or out of connections. The API answers 503 with
  ``Retry-After``; the worker backs off and tries again, never exits; every periodic
  job skips a round.
- :class:`~eventstream.errors.BackendError`: anything else the driver raised — a bug or
  a misconfiguration (a wrong Redis password among them). Not retried.

Exceptions that are not the driver's (a ``ValueError`` of our own) pass untranslated.
The original is the new exception's ``__cause__``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

import redis.exceptions
import sqlalchemy.exc

from eventstream.errors import (
    BackendError,
    BackendUnavailable,
    EventStreamError,
    RedisTimeout,
    RedisUnavailable,
    StoreUnavailable,
)

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", bound=Callable[..., Any])


def _never(_: BaseException) -> bool:
    return False


@dataclass(frozen=True, eq=False)
class Backend:
    """One backend's table: driver exception class -> ours (the most specific class wins).

    ``lost``: whether an exception the table calls a ``BackendError`` is in truth a
    connection lost, which makes it ``unavailable`` instead."""

    name: str
    table: dict[type[BaseException], type[EventStreamError]]
    unavailable: type[BackendUnavailable]
    lost: Callable[[BaseException], bool] = _never
    catch: tuple[type[BaseException], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "catch", tuple(self.table))


# SQLSTATE classes and codes of a lost or refused connection: 08 connection exception,
# 57P01-57P03 server shutting down or starting, 53300 too many connections.
_LOST_SQLSTATE_CLASSES = ("08",)
_LOST_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def _lost(exc: BaseException) -> bool:
    """Whether a DBAPIError is a connection lost or refused (waiting can cure it)."""
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    error: BaseException | None = exc.orig
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


REDIS = Backend(
    "Redis",
    {
        # redis-py's BusyLoadingError (a server loading its data) is a ConnectionError;
        # its TimeoutError is not an OSError.
        redis.exceptions.TimeoutError: RedisTimeout,
        # A wrong or missing password (WRONGPASS, NOAUTH) is a ConnectionError to redis-py,
        # but no wait cures it: a worker must stop and say so, not retry forever.
        redis.exceptions.AuthenticationError: BackendError,
        redis.exceptions.ConnectionError: RedisUnavailable,
        redis.exceptions.ReadOnlyError: RedisUnavailable,  # a failover has not finished
        # Redis Cluster: a failover or a resharding under way. CLUSTERDOWN (MASTERDOWN
        # among them) until a replica is promoted; TRYAGAIN while a slot migrates;
        # MOVED/ASK that the client gave up following (ClusterError: "TTL exhausted");
        # a slot no node serves yet; no node reachable to learn the slot map from.
        redis.exceptions.ClusterDownError: RedisUnavailable,
        redis.exceptions.TryAgainError: RedisUnavailable,
        redis.exceptions.AskError: RedisUnavailable,  # MovedError too
        redis.exceptions.ClusterError: RedisUnavailable,
        redis.exceptions.SlotNotCoveredError: RedisUnavailable,
        redis.exceptions.RedisClusterUnreachableError: RedisUnavailable,
        # Not RedisErrors: keys of several slots in one command or transaction (a bug:
        # every key of a deployment shares one hash tag), a bad cluster URL (a db other
        # than 0).
        redis.exceptions.ClusterCrossSlotError: BackendError,
        redis.exceptions.RedisClusterException: BackendError,
        OSError: RedisUnavailable,  # a socket error redis-py let through
        redis.exceptions.RedisError: BackendError,
    },
    RedisUnavailable,
)

STORE = Backend(
    "the store",
    {
        sqlalchemy.exc.OperationalError: StoreUnavailable,  # refused, locked, shutting down
        sqlalchemy.exc.InterfaceError: StoreUnavailable,
        sqlalchemy.exc.DisconnectionError: StoreUnavailable,
        sqlalchemy.exc.TimeoutError: StoreUnavailable,  # no pooled connection in time
        OSError: StoreUnavailable,
        # A connection cut mid-statement reaches SQLAlchemy as a plain DBAPIError
        # (asyncpg: "connection was closed in the middle of operation", SQLSTATE 08003):
        # unavailable when the connection was lost (see _lost), else an error.
        sqlalchemy.exc.DBAPIError: BackendError,
        sqlalchemy.exc.SQLAlchemyError: BackendError,
    },
    StoreUnavailable,
    lost=_lost,
)


def translate(exc: BaseException, backend: Backend) -> BaseException:
    """EventStream's exception for ``exc``, raised by ``backend``'s driver; ``exc``
    itself when the table does not list it (not the driver's, or already ours)."""
    kind = next((backend.table[c] for c in type(exc).__mro__ if c in backend.table), None)
    if kind is None:
        return exc
    if kind is BackendError and backend.lost(exc):
        kind = backend.unavailable
    what = kind.what if issubclass(kind, BackendUnavailable) else f"{backend.name} refused the request"
    text = str(exc).strip().partition("\n")[0]  # SQLAlchemy adds the SQL and a link below
    new = kind(f"{what}: {type(exc).__name__}" + (f": {text}" if text else ""))
    new.__cause__ = exc
    return new


def translated(backend: Backend) -> Callable[[C], C]:
    """A decorator: on a class, every public coroutine method (and async generator
    method) defined on it raises EventStream's exceptions instead of ``backend``'s; on a
    coroutine function, that function does.

    The wrapper costs one frame per call and nothing on success but the coroutine;
    the table is consulted only when something was raised. Properties, plain methods
    and methods inherited from another class are left as they are.
    """

    def decorate(target: C) -> C:
        if not isinstance(target, type):
            if not inspect.iscoroutinefunction(target):
                raise TypeError(f"translated() wraps classes and coroutine functions, not {target!r}")
            return cast(C, _coroutine(target, backend))
        for name, attr in list(vars(target).items()):
            if name.startswith("_"):
                continue
            if inspect.iscoroutinefunction(attr):
                setattr(target, name, _coroutine(attr, backend))
            elif inspect.isasyncgenfunction(attr):
                setattr(target, name, _async_generator(attr, backend))
        return target

    return decorate


def _coroutine(
    method: Callable[P, Coroutine[Any, Any, T]], backend: Backend
) -> Callable[P, Coroutine[Any, Any, T]]:
    catch = backend.catch

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except catch as exc:
            raise translate(exc, backend) from exc

    return call


def _async_generator(
    method: Callable[P, AsyncGenerator[T, None]], backend: Backend
) -> Callable[P, AsyncGenerator[T, None]]:
    """Iterates the method's generator (values sent in with ``asend`` are not passed on)."""
    catch = backend.catch

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
        items = method(*args, **kwargs)
        try:
            async for item in items:
                yield item
        except catch as exc:
            raise translate(exc, backend) from exc
        finally:
            await items.aclose()

    return call
