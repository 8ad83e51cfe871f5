"""``Client``: the blocking producer. It only sends and sleeps; the rules are in ``rules``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx

from eventstream.client import rules
from eventstream.client.base import DEFAULT_PAGE, BaseClient
from eventstream.client.senders import ThreadSender
from eventstream.results import Accepted, Rejected

T = TypeVar("T")
STARTING = threading.Lock()


class Client(BaseClient[httpx.BaseTransport]):
    """Sends events to an EventStream API over HTTP, and reads them back.

    ``Client(base_url, api_key=None)``; the key defaults to ``EVENTSTREAM_API_KEY``. One
    pooled connection set per client: make one and reuse it, and close it (``close()``,
    or ``with Client(...) as client:``). Keyword options: ``timeout_s`` (per request),
    ``max_attempts`` and ``retry_budget_s`` (when to stop retrying), ``retry_base_s`` and
    ``retry_max_delay_s`` (the backoff), ``max_batch`` and ``max_body_bytes`` (how
    ``send_batch`` splits a list: the server's limits), ``transport`` (an
    ``httpx.BaseTransport``, for proxies, TLS or tests). Thread-safe.

    Every send is idempotent (see ``send``); failures are retried with backoff and then
    raised as EventStream's exceptions (``ValidationError``, ``PayloadTooLarge``,
    ``Unauthorized``, ``Forbidden``, ``NotFound``, ``RateLimited``, ``Unavailable``,
    ``UnexpectedResponse``), each with ``status`` and ``problem``.
    """

    def _open(self, headers: dict[str, str], transport: httpx.BaseTransport | None) -> None:
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.options.timeout_s, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections; first, when ``enqueue`` was used, deliver what
        it buffered (waiting at most ``close_timeout_s``; see ``enable_background``)."""
        self._closed = True
        if isinstance(self._sender, ThreadSender):
            self._sender.close()
        self._http.close()

    def enqueue(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> str:
        """Buffer one event for background sending and return its idempotency key (yours,
        or one made now) at once; a thread sends the buffer in batches (``send_batch``,
        with its retries). The arguments are ``send``'s; an event that cannot be sent
        (not JSON, too large, a naive timestamp) raises here. A full buffer blocks the
        calling thread, or raises ``BufferFull`` (see ``enable_background``). Events
        that fail for good go to ``on_error``. ``flush()`` waits for delivery; ``close()``
        flushes, and so does the exit of the process (at most ``close_timeout_s``)."""
        event = self._event(type, payload, idempotency_key, ordering_key, source, severity, timestamp)
        if self._sender is None:
            with STARTING:  # two threads' first enqueues make one sender
                if self._sender is None:
                    self._sender = ThreadSender(self.send_batch, self._background, self.options.max_batch)
        assert isinstance(self._sender, ThreadSender)
        self._sender.put(event)
        return str(event["id"])

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every event enqueued before this call is delivered or reported to
        ``on_error``; ``TimeoutError`` after ``timeout_s`` seconds (the events stay buffered)."""
        if isinstance(self._sender, ThreadSender):
            self._sender.flush(timeout_s)

    def _run(self, plan: rules.Plan[T]) -> T:
        reply: rules.Reply = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, rules.Sleep):
                    time.sleep(step.seconds)
                    reply = None
                    continue
                try:
                    reply = self._http.request(
                        step.method, step.path, params=step.params, headers=step.headers, content=step.content
                    )
                except httpx.RequestError as exc:
                    reply = exc
        except StopIteration as done:
            return cast(T, done.value)

    def send(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        source: str | None = None,
        severity: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> Accepted:
        """Send one event; return its ``Accepted(event_id, duplicate)``.

        ``idempotency_key``: yours, to make repeats of this event duplicates (within the
        server's dedupe window); without one the client makes one for this call, and
        every retry of the call reuses it. ``duplicate`` is then the server's word when
        the key is yours, and false when it is the client's (a duplicate can only be
        the client's own earlier try that got through). ``ordering_key``: events with
        one key are handled one at a time, in order. ``timestamp``: a timezone-aware
        datetime or an ISO 8601 string."""
        plan = rules.send(
            self.options,
            type,
            payload,
            idempotency_key=idempotency_key,
            ordering_key=ordering_key,
            source=source,
            severity=severity,
            timestamp=timestamp,
        )
        return self._run(plan)

    def send_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Accepted | Rejected]:
        """Send events given as dicts in the HTTP body form (``type``, ``payload``,
        ``source``, ``severity``, ``timestamp``, ``id``, ``orderingKey``): one result per
        item, in order, ``Rejected`` (with the item's ``index``) for those refused.

        Sent in requests of at most ``max_batch`` items and ``max_body_bytes``; an item
        larger than that alone is Rejected (413) without being sent. An item without an
        ``id`` is given one (on a copy) so its retries cannot enqueue it twice. A request
        that still fails after the retries raises; the requests before it were accepted:
        give every item its own ``id`` to send the same list again safely."""
        return self._run(rules.send_batch(self.options, events))

    def get(self, event_id: str) -> dict[str, Any]:
        """The event as GET /events/{id} gives it (``status``, ``attempts``, ...); NotFound if unknown."""
        return self._run(rules.get(self.options, event_id))

    def failed(self, *, type: str | None = None, limit: int = DEFAULT_PAGE) -> Iterator[dict[str, Any]]:
        """The dead events (of one ``type``, or all), newest first, fetched ``limit`` per request."""
        cursor: str | None = None
        while True:
            items, cursor = self._run(rules.failed_page(self.options, type, limit, cursor))
            yield from items
            if cursor is None:
                return

    def replay_dead(self, event_id: str | None = None, *, type: str | None = None) -> dict[str, Any]:
        """Send dead events back to the queue (same ids, attempts afresh): one by id, or
        those of a ``type``, or all; returns the API's answer (``replayed``, and
        ``nextCursor``: not null when more remain, so call again). Retried only when the
        request surely did not arrive (or on 429)."""
        return self._run(rules.replay_dead(self.options, event_id, type))
