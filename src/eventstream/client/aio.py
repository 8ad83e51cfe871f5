"""``AsyncClient``: the asyncio producer. It only sends and sleeps; the rules are in ``rules``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx

from eventstream.client import rules
from eventstream.client.base import DEFAULT_PAGE, BaseClient
from eventstream.client.senders import TaskSender
from eventstream.results import Accepted, Rejected

T = TypeVar("T")


class AsyncClient(BaseClient[httpx.AsyncBaseTransport]):
    """``Client``'s twin for asyncio: the same options, rules and exceptions, every
    method awaited (``failed`` is an async iterator). Close it with ``await aclose()``,
    or use ``async with AsyncClient(...) as client:``. ``transport``: an
    ``httpx.AsyncBaseTransport``."""

    def _open(self, headers: dict[str, str], transport: httpx.AsyncBaseTransport | None) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.options.timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; first, when ``enqueue`` was used, deliver what
        it buffered (waiting at most ``close_timeout_s``)."""
        self._closed = True
        if isinstance(self._sender, TaskSender):
            await self._sender.close()
        await self._http.aclose()

    async def enqueue(
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
        """As ``Client.enqueue``: returns at once unless the buffer is full, then waits for
        room (or raises ``BufferFull``). The sending task runs on the loop of the first
        ``enqueue``; use the client from that loop only. No flush at process exit: call
        ``await aclose()`` (or use ``async with``)."""
        event = self._event(type, payload, idempotency_key, ordering_key, source, severity, timestamp)
        if self._sender is None:
            self._sender = TaskSender(self.send_batch, self._background, self.options.max_batch)
        assert isinstance(self._sender, TaskSender)
        await self._sender.put(event)
        return str(event["id"])

    async def flush(self, timeout_s: float | None = None) -> None:
        """As ``Client.flush``, awaited."""
        if isinstance(self._sender, TaskSender):
            await self._sender.flush(timeout_s)

    async def _run(self, plan: rules.Plan[T]) -> T:
        reply: rules.Reply = None
        try:
            while True:
                step = plan.send(reply)
                if isinstance(step, rules.Sleep):
                    await asyncio.sleep(step.seconds)
                    reply = None
                    continue
                try:
                    reply = await self._http.request(
                        step.method, step.path, params=step.params, headers=step.headers, content=step.content
                    )
                except httpx.RequestError as exc:
                    reply = exc
        except StopIteration as done:
            return cast(T, done.value)

    async def send(
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
        """As ``Client.send``, awaited."""
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
        return await self._run(plan)

    async def send_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Accepted | Rejected]:
        """As ``Client.send_batch``, awaited."""
        return await self._run(rules.send_batch(self.options, events))

    async def get(self, event_id: str) -> dict[str, Any]:
        """As ``Client.get``, awaited."""
        return await self._run(rules.get(self.options, event_id))

    async def failed(
        self, *, type: str | None = None, limit: int = DEFAULT_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        """As ``Client.failed``: ``async for item in client.failed(): ...``."""
        cursor: str | None = None
        while True:
            items, cursor = await self._run(rules.failed_page(self.options, type, limit, cursor))
            for item in items:
                yield item
            if cursor is None:
                return

    async def replay_dead(self, event_id: str | None = None, *, type: str | None = None) -> dict[str, Any]:
        """As ``Client.replay_dead``, awaited."""
        return await self._run(rules.replay_dead(self.options, event_id, type))
