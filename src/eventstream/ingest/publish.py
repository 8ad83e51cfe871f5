"""In-process publishing: ``EventStream.publish`` and ``publish_sync``, without HTTP.

An event published here takes the path of ``POST /events`` from the point where the
API has read the body: the same JSON body is built and run through ``parse_event`` with
the settings' limits (so the errors and their locations are the API's), then the
backpressure check, the group commit and the atomic ingest script (``Broker.enqueue``,
the partition count checked first). Idempotency keys live in the anonymous namespace,
the one the API uses without API keys, unless a shared namespace is configured.

Connections: redis-py's asyncio clients belong to the event loop that made them, so the
publisher keeps one *lane* (client, group commit, backpressure) per loop. A lane closes
itself when its loop shuts down (``asyncio.run`` and uvicorn finalize the loop's async
generators, and a lane holds one suspended generator for that), or on
``aclose()`` from its loop. ``publish_sync`` runs on one private loop in a daemon thread,
started at its first call and stopped by ``close()`` or at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventstream.auth.apikeys import NAMESPACE_PATTERN
from eventstream.backends import connect_broker
from eventstream.embedded import running_url
from eventstream.errors import (
    BackendUnavailable,
    ConfigError,
    PayloadTooLarge,
    Unconfirmed,
    ValidationError,
)
from eventstream.incoming import IncomingEvent, encode_body, parse_event, too_deep
from eventstream.ingest.accept import (
    GroupCommit,
    Publication,
    check_idempotency_key,
    conflict_message,
    now_ms,
    to_envelope,
)
from eventstream.ingest.backpressure import Backpressure
from eventstream.results import Accepted
from eventstream.settings import Settings

if TYPE_CHECKING:
    from eventstream.ingest.tracing import IngestTracing

# Where the idempotency key is said to come from in the conflict message: the HTTP
# clients send it as this header, and the answer is the same whichever way it came.
KEY_SOURCE = "header Idempotency-Key"
KEY_LOC = "header.Idempotency-Key"


def check_key(key: Any) -> str | None:
    """The idempotency key, refused as the API refuses its header (1-256 characters), and
    for what a header cannot carry (not a string, a NUL: the store could not keep it)."""
    if key is not None and (not isinstance(key, str) or "\x00" in key):
        msg = "must be a string without NUL characters"
        raise ValidationError(f"the idempotency key {msg}", [{"loc": KEY_LOC, "msg": msg}])
    return check_idempotency_key(key)


def redis_url_of(settings: Settings) -> tuple[str, Path | None]:
    """The Redis the running stack uses: EVENTSTREAM_REDIS_URL, else the embedded server
    of an ``eventstream up`` running with this data dir (and the directory whose URL file
    named it, so a restarted server on another port is found again); ConfigError else."""
    if settings.redis_url:
        return settings.redis_url, None
    server_dir = settings.data_dir / "redis"
    url = running_url(server_dir)
    if url is None:
        raise ConfigError(
            "cannot publish: EVENTSTREAM_REDIS_URL is not set and no `eventstream up` is running "
            f"with the data dir {settings.data_dir.resolve()} (its embedded Redis writes its URL to "
            f"{server_dir.resolve() / 'url'}). Set EVENTSTREAM_REDIS_URL to the Redis your "
            "EventStream uses, or EVENTSTREAM_DATA_DIR to the data dir of `eventstream up`"
        )
    return url, server_dir


@dataclass(slots=True)
class _Lane:
    """What one event loop publishes with: the API's services, without the store."""

    url: str
    server_dir: Path | None  # the URL came from `eventstream up`'s URL file there
    ingest: GroupCommit
    backpressure: Backpressure
    tracing: IngestTracing | None
    closer: Any  # the suspended async generator whose finalization closes the lane

    def publication(self, type_: str) -> Publication:
        if self.tracing is None:
            return self.ingest
        from eventstream.tracing import W3C

        carrier: dict[str, str] = {}
        W3C.inject(carrier)  # the current span's context, if there is one
        return self.tracing.start(carrier, type_) or self.ingest


class Publisher:
    """Publishes events into the deployment's Redis; see the module docstring."""

    def __init__(self, settings: Settings | None = None, namespace: str | None = None) -> None:
        self._settings = settings
        self._namespace = _namespace(namespace)
        self._lock = threading.Lock()
        self._lanes: dict[asyncio.AbstractEventLoop, asyncio.Task[_Lane]] = {}
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._atexit = False

    def configure(self, settings: Settings | None = None, *, namespace: str | None = None) -> None:
        """Use ``settings`` (None: from the environment at the first publish) and the
        shared idempotency ``namespace``; only while no connection is open."""
        with self._lock:
            self._forget_closed_loops()
            if self._lanes or self._thread is not None:
                raise ConfigError(
                    "the publisher is in use: configure it before the first publish, "
                    "or after closing it (close_publisher / aclose_publisher)"
                )
            self._settings = settings
            self._namespace = _namespace(namespace)

    @property
    def settings(self) -> Settings:
        with self._lock:
            if self._settings is None:
                try:
                    self._settings = Settings()  # type: ignore[call-arg]
                except ValueError as exc:
                    raise ConfigError(
                        f"cannot publish: the EVENTSTREAM_* settings are invalid: {exc}"
                    ) from None
            return self._settings

    async def publish(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> Accepted:
        """Validate, dedupe and enqueue one event, as ``POST /events`` does."""
        event, key = self.parse(type_, payload, idempotency_key, ordering_key, source, severity, timestamp)
        lane = await self._lane()
        try:
            await lane.backpressure.check()
            publication = lane.publication(event.type)
            item = to_envelope(event, key, now_ms(), trace=publication.context, namespace=self._namespace)
            try:
                [result] = await publication.submit([item])
            except Unconfirmed as exc:
                [result] = exc.results
                if not result.conflict:
                    raise Unconfirmed(exc.detail, [Accepted(result.event_id, result.duplicate)]) from None
        except BackendUnavailable:
            await self._recheck_url(lane)
            raise
        if result.conflict:
            raise ValidationError(conflict_message(KEY_SOURCE))
        return Accepted(result.event_id, result.duplicate)

    def parse(
        self,
        type_: Any,
        payload: Any,
        idempotency_key: Any = None,
        ordering_key: Any = None,
        source: Any = None,
        severity: Any = None,
        timestamp: Any = None,
    ) -> tuple[IncomingEvent, str | None]:
        """The event and its idempotency key, checked in the API's order (body size, key,
        event) on the body an HTTP client would send for them."""
        s = self.settings
        try:
            raw = encode_body(type_, payload, source, severity, timestamp, ordering_key)
        except RecursionError:
            raise too_deep(s.max_depth) from None
        if len(raw) > s.max_body_bytes:
            raise PayloadTooLarge(f"body is {len(raw)} bytes; the limit is {s.max_body_bytes} bytes")
        key = check_key(idempotency_key)
        return parse_event(raw, s.max_depth, s.max_object_keys, s.max_string_length), key

    def publish_sync(self, type_: str, payload: dict[str, Any], **options: Any) -> Accepted:
        """``publish`` (same options) from code without a running event loop (threads,
        sync views): on the publisher's own loop thread; blocks until Redis answered."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "publish_sync() was called from a running event loop, which it would block: "
                "use `await app.publish(...)` there"
            )
        with self._lock:  # close() cannot stop the loop between these two steps
            loop = self._background_loop()
            future = asyncio.run_coroutine_threadsafe(self.publish(type_, payload, **options), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        if self._thread_loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="eventstream-publisher", daemon=True
            )
            thread.start()
            self._thread, self._thread_loop = thread, loop
            if not self._atexit:
                atexit.register(self.close)
                self._atexit = True
        return self._thread_loop

    async def _lane(self) -> _Lane:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._forget_closed_loops()
            task = self._lanes.get(loop)
            if task is None:
                task = self._lanes[loop] = loop.create_task(self._open(loop))
        try:
            return await asyncio.shield(task)
        except Exception:
            if task.done():  # opening failed: the next publish tries again
                self._drop(loop, task)
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        settings = self.settings
        url, server_dir = redis_url_of(settings)
        stack = AsyncExitStack()
        # a plain coroutine, not open_broker's context manager: an async generator of its
        # own would be closed by the loop's shutdown beside the closer below, at once
        broker = await connect_broker(settings, url)
        stack.push_async_callback(broker.aclose)
        ingest = GroupCommit(broker, int(settings.dedupe_window * 1000))
        tracing = None
        if settings.tracing:
            from eventstream.ingest.tracing import IngestTracing

            tracing = IngestTracing(settings, ingest)
        closer = self._closer(loop, stack)
        await anext(closer)  # registered with the loop: finalized when the loop shuts down
        backpressure = Backpressure(broker, settings.max_backlog, settings.max_memory_ratio)
        return _Lane(url, server_dir, ingest, backpressure, tracing, closer)

    async def _closer(self, loop: asyncio.AbstractEventLoop, stack: AsyncExitStack) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                task = self._lanes.get(loop)
            if task is not None:
                self._drop(loop, task)
            await stack.aclose()

    def _drop(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[_Lane]) -> None:
        with self._lock:
            if self._lanes.get(loop) is task:
                del self._lanes[loop]

    def _forget_closed_loops(self) -> None:
        """Lanes of loops closed without finalizing them (a bare ``loop.close()``)."""
        for loop in [lp for lp in self._lanes if lp.is_closed()]:
            del self._lanes[loop]

    async def _recheck_url(self, lane: _Lane) -> None:
        """When the URL came from `eventstream up`'s URL file and the file now names
        another server (or none), close the lane: the next publish follows the file."""
        if lane.server_dir is not None and running_url(lane.server_dir) != lane.url:
            await lane.closer.aclose()

    async def aclose(self) -> None:
        """Close this loop's connections and the ``publish_sync`` thread."""
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._lanes.get(loop)
        if task is not None:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().closer.aclose()
            else:
                task.cancel()
                self._drop(loop, task)
        await asyncio.to_thread(self._stop_thread)

    def close(self) -> None:
        """Stop the ``publish_sync`` thread, its connections closed. (The connections of
        other loops close when their loop shuts down, or with ``aclose()`` from it.)"""
        self._stop_thread()
        with self._lock:
            self._forget_closed_loops()

    def _stop_thread(self) -> None:
        with self._lock:
            thread, loop = self._thread, self._thread_loop
            self._thread = self._thread_loop = None
            if loop is not None:
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """The ``publish_sync`` thread: its loop until stopped, then what ``asyncio.run`` does
    at the end (publishes still running cancelled, the lane's connections closed)."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _namespace(name: str | None) -> str | None:
    """The dedupe namespace of the API keys created with ``--namespace name`` (None: the
    anonymous one)."""
    if name is None:
        return None
    if not isinstance(name, str) or not re.fullmatch(NAMESPACE_PATTERN, name):
        raise ConfigError(f"namespace {name!r} must be 1-64 characters of letters, digits, '_.-'")
    return f"ns:{name}"
