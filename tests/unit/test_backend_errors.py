"""The table of backend errors (eventstream.backend_errors) and the wrapper that applies it.

The exceptions here are the drivers' own classes, built by hand: the table is a pure
function of them. tests/store/test_backend_failures.py feeds it real failures.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.exceptions as rx
import sqlalchemy.exc as sx

from eventstream.api.problems import response_for
from eventstream.backend_errors import REDIS, STORE, Backend, translate, translated
from eventstream.errors import (
    BackendError,
    BackendUnavailable,
    EventStreamError,
    NotFound,
    RedisTimeout,
    RedisUnavailable,
    StoreUnavailable,
    Unavailable,
)

# What each listed driver exception must become: written out here, not read from the table.
REDIS_EXPECTED: dict[type[BaseException], type[EventStreamError]] = {
    rx.TimeoutError: RedisTimeout,
    rx.ConnectionError: RedisUnavailable,
    rx.BusyLoadingError: RedisUnavailable,  # a server loading its data
    rx.ReadOnlyError: RedisUnavailable,  # a replica not yet promoted
    rx.AuthenticationError: BackendError,  # a ConnectionError to redis-py, but no wait cures it
    rx.AuthenticationWrongNumberOfArgsError: BackendError,
    rx.MaxConnectionsError: RedisUnavailable,
    OSError: RedisUnavailable,
    ConnectionResetError: RedisUnavailable,
    TimeoutError: RedisUnavailable,  # the builtin one: an OSError
    rx.RedisError: BackendError,
    rx.ResponseError: BackendError,
    rx.NoScriptError: BackendError,
    rx.OutOfMemoryError: BackendError,
    rx.DataError: BackendError,
    rx.WatchError: BackendError,
    # Redis Cluster: waiting for a failover or a slot migration cures these
    rx.ClusterDownError: RedisUnavailable,  # CLUSTERDOWN: a slot has no primary yet
    rx.MasterDownError: RedisUnavailable,
    rx.TryAgainError: RedisUnavailable,  # a slot migrating
    rx.AskError: RedisUnavailable,
    rx.MovedError: RedisUnavailable,
    rx.ClusterError: RedisUnavailable,  # redirections past the client's TTL
    rx.SlotNotCoveredError: RedisUnavailable,
    rx.RedisClusterUnreachableError: RedisUnavailable,  # no node answered for the slot map
    # ... but not these: a bug or a misconfiguration
    rx.ClusterCrossSlotError: BackendError,  # keys of several slots in one command
    rx.CrossSlotTransactionError: BackendError,
    rx.RedisClusterException: BackendError,  # e.g. a cluster URL naming a db other than 0
}
STORE_EXPECTED: dict[type[BaseException], type[EventStreamError]] = {
    sx.OperationalError: StoreUnavailable,
    sx.InterfaceError: StoreUnavailable,
    sx.DisconnectionError: StoreUnavailable,
    sx.TimeoutError: StoreUnavailable,
    OSError: StoreUnavailable,
    ConnectionRefusedError: StoreUnavailable,
    sx.DBAPIError: BackendError,
    sx.ProgrammingError: BackendError,
    sx.IntegrityError: BackendError,
    sx.DataError: BackendError,
    sx.SQLAlchemyError: BackendError,
    sx.ArgumentError: BackendError,
}


def build(cls: type[BaseException], orig: BaseException | None = None) -> BaseException:
    if issubclass(cls, sx.DBAPIError):
        return cls("SELECT 1", None, orig or Exception("driver says no"))
    if issubclass(cls, rx.AskError):  # MOVED and ASK carry the slot and the node to ask
        return cls("3999 127.0.0.1:7001")
    return cls("it failed")


@pytest.mark.parametrize(
    ("backend", "expected"), [(REDIS, REDIS_EXPECTED), (STORE, STORE_EXPECTED)], ids=["redis", "store"]
)
def test_every_listed_error_is_expected_here(
    backend: Backend, expected: dict[type[BaseException], type[EventStreamError]]
) -> None:
    unknown = sorted(c.__qualname__ for c in backend.table if c not in expected)
    assert not unknown, f"add {unknown} to the expectations of this test"


@pytest.mark.parametrize(
    ("backend", "cls", "kind"),
    [(REDIS, c, k) for c, k in REDIS_EXPECTED.items()] + [(STORE, c, k) for c, k in STORE_EXPECTED.items()],
    ids=lambda v: v.__qualname__ if isinstance(v, type) else v.name,
)
def test_each_backend_error_becomes_its_type(
    backend: Backend, cls: type[BaseException], kind: type[EventStreamError]
) -> None:
    original = build(cls)
    ours = translate(original, backend)
    assert type(ours) is kind
    assert ours.__cause__ is original
    assert f": {cls.__name__}: " in str(ours)  # what failed, then the driver's own words


@pytest.mark.parametrize("backend", [REDIS, STORE], ids=["redis", "store"])
@pytest.mark.parametrize(
    "exc", [ValueError("ours"), KeyError("k"), RuntimeError("loop closed"), NotFound("event", "e-1")]
)
def test_an_unknown_error_passes_through_untranslated(backend: Backend, exc: Exception) -> None:
    assert translate(exc, backend) is exc


def test_the_other_backends_errors_are_unknown_to_each() -> None:
    refused = rx.ConnectionError("refused")
    locked = build(sx.OperationalError)
    assert translate(refused, STORE) is refused
    assert translate(locked, REDIS) is locked


def test_the_tree() -> None:
    assert issubclass(RedisTimeout, RedisUnavailable)
    assert issubclass(RedisUnavailable, BackendUnavailable)
    assert issubclass(StoreUnavailable, BackendUnavailable)
    assert issubclass(BackendUnavailable, Unavailable)  # the API's 503
    assert not issubclass(BackendError, Unavailable)  # not retried


# ---- a DBAPIError is unavailable when its connection was lost ---------------------------


class DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate", ["08003", "08006", "08001", "57P01", "57P02", "57P03", "53300"], ids=str)
def test_a_dbapi_error_with_a_lost_connection_sqlstate_is_unavailable(sqlstate: str) -> None:
    ours = translate(build(sx.DBAPIError, DriverError("cut", sqlstate)), STORE)
    assert type(ours) is StoreUnavailable


@pytest.mark.parametrize("sqlstate", ["42601", "23505", "22P02", None], ids=str)
def test_a_dbapi_error_of_a_statement_is_an_error(sqlstate: str | None) -> None:
    ours = translate(build(sx.DBAPIError, DriverError("bad", sqlstate)), STORE)
    assert type(ours) is BackendError
    assert str(ours).startswith("the store refused the request: DBAPIError: ")


def test_a_dbapi_error_caused_by_a_socket_error_is_unavailable() -> None:
    driver = DriverError("connection was closed in the middle of operation")
    driver.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert type(translate(build(sx.DBAPIError, driver), STORE)) is StoreUnavailable


def test_a_dbapi_error_whose_connection_was_invalidated_is_unavailable() -> None:
    exc = sx.DBAPIError("SELECT 1", None, DriverError("gone"), connection_invalidated=True)
    assert type(translate(exc, STORE)) is StoreUnavailable


def test_the_message_keeps_one_line_of_the_drivers_words() -> None:
    ours = translate(build(sx.OperationalError, DriverError("database is locked")), STORE)
    assert "\n" not in str(ours)  # SQLAlchemy's own text goes on with the SQL and a link
    assert (
        str(ours) == f"cannot reach the store: OperationalError: ({__name__}.DriverError) database is locked"
    )


# ---- the wrapper ---------------------------------------------------------------------


@translated(REDIS)
class Edge:
    """Stands for the Broker: methods that raise what redis-py raises."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.calls = 0

    async def call(self, value: int, *, plus: int = 0) -> int:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return value + plus

    async def items(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            if i == 2 and self.error is not None:
                raise self.error
            yield i

    async def _private(self) -> None:
        raise rx.ConnectionError("not translated: private")

    def plain(self) -> None:
        raise rx.ConnectionError("not translated: not a coroutine")


async def test_a_method_returns_its_value() -> None:
    edge = Edge(None)
    assert await edge.call(1, plus=2) == 3
    assert Edge.call.__name__ == "call"  # functools.wraps


async def test_a_method_raises_ours_with_the_original_as_cause() -> None:
    refused = rx.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    with pytest.raises(RedisUnavailable) as caught:
        await Edge(refused).call(1)
    assert caught.value.__cause__ is refused
    assert (
        str(caught.value)
        == "cannot reach Redis: ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused."
    )


async def test_a_method_lets_an_unknown_error_through() -> None:
    with pytest.raises(ValueError, match="ours"):
        await Edge(ValueError("ours")).call(1)


async def test_an_async_generator_method_is_translated_too() -> None:
    got: list[int] = []

    async def collect() -> None:
        async for i in Edge(rx.TimeoutError("Timeout reading from socket")).items(5):
            got.append(i)

    with pytest.raises(RedisTimeout):
        await collect()
    assert got == [0, 1]
    assert [i async for i in Edge(None).items(3)] == [0, 1, 2]


async def test_private_and_plain_methods_are_left_alone() -> None:
    with pytest.raises(rx.ConnectionError):
        await Edge(None)._private()
    with pytest.raises(rx.ConnectionError):
        Edge(None).plain()


async def test_a_coroutine_function_can_be_translated() -> None:
    @translated(STORE)
    async def read() -> None:
        raise build(sx.OperationalError)

    with pytest.raises(StoreUnavailable):
        await read()


def test_only_classes_and_coroutine_functions_are_translated() -> None:
    def plain() -> None: ...

    with pytest.raises(TypeError, match="coroutine functions"):
        translated(REDIS)(plain)


async def test_a_real_refused_socket_through_the_wrapper() -> None:
    """A connection refused by the kernel (a closed port), as redis-py can let it through."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connecting is refused

        @translated(REDIS)
        async def dial() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass

        with pytest.raises(RedisUnavailable) as caught:
            await dial()
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


# ---- the API's answer: one mapping of our types ------------------------------------------


def body(exc: Exception) -> tuple[int, dict[str, str], dict[str, object]]:
    r = response_for(exc)
    return r.status_code, dict(r.headers), msgspec.json.decode(bytes(r.body))


@pytest.mark.parametrize("kind", [RedisUnavailable, StoreUnavailable, BackendUnavailable])
def test_an_unavailable_backend_is_503_with_retry_after(kind: type[BackendUnavailable]) -> None:
    status, headers, doc = body(
        kind("cannot reach it: ConnectionError: Error 111 connecting to 10.0.0.5:6379")
    )
    assert (status, headers["retry-after"]) == (503, "1")
    assert (
        doc["detail"]
        == "a backing service (Redis or the store) is unreachable; nothing was changed, retry later"
    )
    assert "10.0.0.5" not in str(doc)  # the operator's message stays in the log


def test_a_redis_timeout_is_503_saying_it_may_have_been_applied() -> None:
    status, headers, doc = body(RedisTimeout("Redis did not answer in time: TimeoutError: Timeout reading"))
    assert (status, headers["retry-after"]) == (503, "1")
    assert doc["detail"] == (
        "Redis did not answer in time; the request may or may not have been applied: "
        "retry later with the same Idempotency-Key to be told which"
    )


def test_a_backend_error_is_500() -> None:
    status, _, doc = body(BackendError("Redis refused the request: ResponseError: WRONGTYPE"))
    assert status == 500
    assert doc["detail"] == "unexpected server error; it has been logged"


def test_a_raw_driver_error_is_no_longer_the_apis_business() -> None:
    # Every backend call goes through an edge; one that did not is a bug, answered 500.
    assert body(rx.ConnectionError("refused"))[0] == 500
