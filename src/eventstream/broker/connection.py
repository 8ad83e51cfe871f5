"""Connecting to Redis: one client per process, with the options every caller needs.

A URL may name a single server or any node of a Redis Cluster (a primary or a replica:
the cluster client learns the whole topology from it). ``connect`` asks the server
which it is, once (``INFO cluster``, on the connection the client keeps), and returns
redis-py's ``RedisCluster`` for a cluster node, its plain ``Redis`` otherwise.
"""

from __future__ import annotations

from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventstream.backend_errors import REDIS, translated

DEFAULT_TIMEOUT_S = 5.0

Client = Redis | RedisCluster

log = structlog.get_logger("eventstream.broker")


@translated(REDIS)  # a wrong password or a bad URL says so in EventStream's words
async def connect(
    url: str,
    timeout: float = DEFAULT_TIMEOUT_S,  # noqa: ASYNC109 (every reply's, not this call's)
    **kwargs: Any,
) -> Client:
    """A redis-py asyncio client (hiredis parser when installed) that decodes to str: a
    ``RedisCluster`` when the server at ``url`` runs in cluster mode, else a ``Redis``.

    ``timeout`` bounds the wait for every reply (and for connecting): a stalled or
    unreachable server raises redis' TimeoutError instead of hanging the caller. It
    must stay well above the workers' blocking read (XREADGROUP BLOCK 200 ms).
    redis-py does not retry a command by itself (retries=0, pinned here, for both
    clients): after a timeout the command may still be applied by the server, and only
    the caller knows whether repeating it is safe (ingest: with an idempotency key).
    The cluster client still follows MOVED and ASK redirections and TRYAGAIN (nothing
    ran), and refreshes its slot map after a connection error or a CLUSTERDOWN, so the
    command after a failover reaches the promoted replica.

    When the server cannot be reached (or the ACL user may not run INFO), the client
    is a plain ``Redis``: a process that starts while its cluster is down must be
    restarted once the cluster is back.
    """
    kwargs.setdefault("health_check_interval", 15)
    kwargs.setdefault("socket_keepalive", True)
    kwargs.setdefault("socket_connect_timeout", min(timeout, 5.0))
    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("retry", Retry(NoBackoff(), 0))
    client = Redis.from_url(url, decode_responses=True, **kwargs)
    pool = client.connection_pool
    pool.connection_class = _closed_is_connection_error(pool.connection_class)
    try:
        clustered = await _cluster_enabled(client)
    except BaseException:
        await client.aclose()
        raise
    if not clustered:
        return client
    await client.aclose()
    cluster = RedisCluster.from_url(url, decode_responses=True, **kwargs)
    # RedisCluster takes no connection class: every node it creates, now or after a
    # failover, is made with the one in its connection options.
    options = cluster.nodes_manager.connection_kwargs
    options["connection_class"] = _closed_is_connection_error(options["connection_class"])
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = options["connection_class"]
    return cluster


async def _cluster_enabled(client: Redis) -> bool:
    """Whether the server runs in cluster mode (False when it cannot tell)."""
    try:
        info = await client.info("cluster")
    except (AuthenticationError, AuthorizationError):
        raise  # no wait cures a wrong password: the caller must stop and say so
    except (RedisConnectionError, RedisTimeoutError, OSError, NoPermissionError) as exc:
        log.warning(
            "cannot tell whether Redis runs in cluster mode: assuming a single server", error=str(exc)
        )
        return False
    return bool(int(info.get("cluster_enabled", 0)))


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
