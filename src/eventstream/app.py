"""EventStream: the registry of handlers and their retry policy."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from eventstream.errors import ConfigError
from eventstream.event import Event
from eventstream.results import Accepted

if TYPE_CHECKING:
    from eventstream.ingest.publish import Publisher
    from eventstream.settings import Settings

HandlerFunc = Callable[[Event], Awaitable[None]] | Callable[[Event], None]
F = TypeVar("F", bound=Callable[..., Any])

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler and its policy. ``None`` fields take the configured defaults."""

    event_type: str
    func: HandlerFunc
    is_async: bool
    max_attempts: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    key_concurrency: int = 1


class EventStream:
    """The application: which handler runs for which event type.

    ``@app.handler("PAYMENT")`` registers a handler; ``@app.handler("*")`` one for
    every type that has no handler of its own. An event whose type has no handler
    (and no ``"*"``) goes to the dead-letter queue with a reason saying so.

    ``key_concurrency`` is how many events of one ordering key this handler may run at
    once (default 1: one at a time, in acceptance order); events without an ordering key
    are not limited by it.
    """

    def __init__(self, name: str = "eventstream") -> None:
        self.name = name
        self._handlers: dict[str, Handler] = {}
        self._publisher: Publisher | None = None

    def handler(
        self,
        event_type: str,
        *,
        max_attempts: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        key_concurrency: int = 1,
    ) -> Callable[[F], F]:
        if max_attempts is not None and max_attempts < 1:
            raise ConfigError(f"max_attempts of {event_type!r} must be at least 1")
        if retry_delay is not None and retry_delay < 0:
            raise ConfigError(f"retry_delay of {event_type!r} must not be negative")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout of {event_type!r} must be positive")
        if isinstance(key_concurrency, bool) or not isinstance(key_concurrency, int) or key_concurrency < 1:
            raise ConfigError(f"key_concurrency of {event_type!r} must be a whole number of at least 1")

        def register(func: F) -> F:
            if event_type in self._handlers:
                raise ConfigError(f"a handler for {event_type!r} is already registered")
            is_async = inspect.iscoroutinefunction(func) or asyncio.iscoroutinefunction(func)
            self._handlers[event_type] = Handler(
                event_type, func, is_async, max_attempts, retry_delay, timeout, key_concurrency
            )
            return func

        return register

    def handler_for(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type) or self._handlers.get(WILDCARD)

    @property
    def key_limits(self) -> dict[str, int]:
        """Each event type's key_concurrency ("*": the wildcard handler's)."""
        return {h.event_type: h.key_concurrency for h in self._handlers.values()}

    @property
    def handlers(self) -> list[Handler]:
        return list(self._handlers.values())

    @property
    def types(self) -> list[str]:
        return sorted(self._handlers)

    # ---- publishing from inside a Python service (eventstream.ingest.publish) ----------

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            from eventstream.ingest.publish import Publisher  # not for the worker's imports

            self._publisher = Publisher()
        return self._publisher

    def configure_publisher(self, settings: Settings | None = None, *, namespace: str | None = None) -> None:
        """Publish with these settings instead of the ``EVENTSTREAM_*`` environment read at
        the first publish; ``namespace``: the idempotency namespace of the API keys created
        with ``--namespace`` (default: the anonymous one). Before the first publish only
        (or after closing the publisher)."""
        self.publisher.configure(settings, namespace=namespace)

    async def publish(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> Accepted:
        """Accept one event as ``POST /events`` does, without HTTP: validated, deduplicated,
        enqueued in Redis. Does not wait for the handler.

        Raises ValidationError (PayloadTooLarge) for what the API answers 4xx, Unavailable
        (Redis unreachable, ingest shedding load; Unconfirmed: queued, replicas did not
        confirm) for its 503, ConfigError when no Redis is configured."""
        return await self.publisher.publish(
            type,
            payload,
            idempotency_key=idempotency_key,
            ordering_key=ordering_key,
            source=source,
            severity=severity,
            timestamp=timestamp,
        )

    def publish_sync(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> Accepted:
        """``publish`` for code without a running event loop (sync views, threads,
        scripts); thread-safe. Inside a running loop it raises RuntimeError: await
        ``publish`` there."""
        return self.publisher.publish_sync(
            type,
            payload,
            idempotency_key=idempotency_key,
            ordering_key=ordering_key,
            source=source,
            severity=severity,
            timestamp=timestamp,
        )

    def close_publisher(self) -> None:
        """Stop the ``publish_sync`` thread and close its connections (also done at exit)."""
        if self._publisher is not None:
            self._publisher.close()

    async def aclose_publisher(self) -> None:
        """Close the publisher's connections of the running loop, and the ``publish_sync``
        thread (an app's shutdown hook)."""
        if self._publisher is not None:
            await self._publisher.aclose()


def default_app() -> EventStream:
    """The app used when no module is given: every event is recorded as processed."""
    app = EventStream("default")

    @app.handler(WILDCARD)
    async def record(event: Event) -> None:
        return None

    return app


def load_app(spec: str | None) -> EventStream:
    """Import ``module:attribute`` (attribute defaults to ``app``)."""
    if not spec:
        return default_app()
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if not isinstance(app, EventStream):
        raise ConfigError(f"{spec!r} is not an EventStream instance (got {type(app).__name__})")
    return app
