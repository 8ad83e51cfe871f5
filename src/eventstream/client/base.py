"""What the sync and async clients share: the constructor, its options and headers, and
the background sending's options."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar

from eventstream.client import rules
from eventstream.client.backlog import OnError, Settings, Stats
from eventstream.client.senders import CLOSED, Sender

TransportT = TypeVar("TransportT")

API_KEY_ENV = "EVENTSTREAM_API_KEY"
DEFAULT_PAGE = 100


class BaseClient(Generic[TransportT]):
    """The constructor both clients share; subclasses open their own httpx client."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        retry_budget_s: float = 30.0,
        retry_base_s: float = 0.1,
        retry_max_delay_s: float = 5.0,
        max_batch: int = 1000,
        max_body_bytes: int = 1_048_576,
        transport: TransportT | None = None,
    ) -> None:
        self.base_url = rules.check_base_url(base_url)
        self.options = rules.Options(
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            retry_budget_s=retry_budget_s,
            retry_base_s=retry_base_s,
            retry_max_delay_s=retry_max_delay_s,
            max_batch=max_batch,
            max_body_bytes=max_body_bytes,
        )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._open(rules.base_headers(key), transport)

    _background = Settings()
    _sender: Sender | None = None
    _closed = False

    def _open(self, headers: dict[str, str], transport: TransportT | None) -> None:
        raise NotImplementedError

    def enable_background(
        self,
        *,
        max_queue: int = 10_000,
        batch_size: int | None = None,
        flush_interval_s: float = 0.5,
        on_full: Literal["block", "raise"] = "block",
        full_timeout_s: float | None = None,
        on_error: OnError | None = None,
        close_timeout_s: float = 30.0,
        retry_pause_s: float = 5.0,
    ) -> Self:
        """Set the options of ``enqueue`` (call it before the first ``enqueue``; without
        it, these defaults hold); returns the client.

        ``max_queue``: events the buffer holds (the batch being sent included);
        ``batch_size``: events per batch (default ``max_batch``); ``flush_interval_s``:
        the longest an event waits for its batch to fill; ``on_full``: ``"block"`` (wait
        for room, at most ``full_timeout_s`` seconds when given, then raise) or
        ``"raise"`` (``BufferFull`` at once); ``on_error(undelivered)``: called with a list
        of ``Undelivered`` (key, event, error) for the events that will not be delivered
        (without it they are logged at error); ``close_timeout_s``: how long ``close``
        (and the exit of the process) waits for delivery before reporting what is left
        undelivered; ``retry_pause_s``: the pause before a batch whose retries ran out
        on a failure that may pass (503, 429, no connection) is tried again."""
        if self._sender is not None:
            raise RuntimeError("enable_background must be called before the first enqueue")
        self._background = Settings(
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            on_full=on_full,
            full_timeout_s=full_timeout_s,
            on_error=on_error,
            close_timeout_s=close_timeout_s,
            retry_pause_s=retry_pause_s,
        )
        return self

    def background_stats(self) -> Stats:
        """Background sending so far: ``pending``, ``sent`` and ``failed`` events."""
        return self._sender.stats() if self._sender is not None else Stats(0, 0, 0)

    def _event(
        self,
        type: str,
        payload: Mapping[str, Any],
        idempotency_key: str | None,
        ordering_key: str | None,
        source: str | None,
        severity: str | None,
        timestamp: datetime | str | None,
    ) -> dict[str, Any]:
        """The batch item ``enqueue`` buffers, checked as far as the client can."""
        if self._closed:
            raise RuntimeError(CLOSED)
        body = rules.event_body(
            type, payload, ordering_key=ordering_key, source=source, severity=severity, timestamp=timestamp
        )
        return rules.batch_item(self.options, body, idempotency_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
