"""Connecting to Redis: one client per process, with the options every caller needs."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

DEFAULT_TIMEOUT_S = 5.0


def connect(url: str, timeout: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> Redis:
    """A redis-py asyncio client (hiredis parser when installed) that decodes to str.

    ``timeout`` bounds the wait for every reply (and for connecting): a stalled or
    unreachable server raises redis' TimeoutError instead of hanging the caller. It
    must stay well above the workers' blocking read (XREADGROUP BLOCK 200 ms).
    redis-py does not retry a command by itself (retries=0, pinned here): after a
    timeout the command may still be applied by the server, and only the caller
    knows whether repeating it is safe (ingest: with an idempotency key).
    """
    kwargs.setdefault("health_check_interval", 15)
    kwargs.setdefault("socket_keepalive", True)
    kwargs.setdefault("socket_connect_timeout", min(timeout, 5.0))
    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("retry", Retry(NoBackoff(), 0))
    client = Redis.from_url(url, decode_responses=True, **kwargs)
    pool = client.connection_pool
    pool.connection_class = _closed_is_connection_error(pool.connection_class)
    return client


def _closed_is_connection_error(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """The connection class, but a write on a connection the peer has closed raises
    redis' ConnectionError (a transient outage every caller handles) instead of the
    RuntimeError uvloop raises ("unable to perform operation on <TCPTransport
    closed=True>"), which made the API answer 500 and stopped workers."""

    class Guarded(cls):  # type: ignore[valid-type,misc]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            try:
                await super().send_packed_command(command, check_health)
            except RuntimeError as exc:  # redis-py has already disconnected
                raise RedisConnectionError(f"connection closed by the peer: {exc}") from exc

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{cls.__name__}"
    return Guarded
