"""The producers' tests (tests/client): a blocking face for both clients, request counting,
and the deployment the module's processes form.

A :class:`Producer` gives the sync ``Client`` and the ``AsyncClient`` the same blocking
methods, running the async one on an event loop of its own, so one body of tests runs
against both; both count the requests they make (retries included) through their
``transport``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from eventstream import Accepted, AsyncClient, Client, Rejected
from eventstream.auth.apikeys import KeyRegistry
from eventstream.broker import Broker, Keys, connect
from tests.support.processes import Api, Cluster
from tests.support.proxy import FaultProxy


class CountingTransport(httpx.HTTPTransport):
    """Counts the requests the sync client makes (retries included)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    """Counts the requests the async client makes (retries included)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        return await super().handle_async_request(request)


class Producer:
    """The sync or the async client behind one blocking interface (one body of tests for both)."""

    def __init__(self, kind: str, base_url: str, api_key: str | None, **options: Any) -> None:
        self.kind = kind
        self._runner: asyncio.Runner | None = None
        if kind == "sync":
            self._transport: CountingTransport | AsyncCountingTransport = CountingTransport()
            self.sync: Client | None = Client(base_url, api_key, transport=self._transport, **options)
            self.aio: AsyncClient | None = None
        else:
            self._runner = asyncio.Runner()
            self._transport = AsyncCountingTransport()
            self.sync = None
            self.aio = AsyncClient(base_url, api_key, transport=self._transport, **options)

    @property
    def requests(self) -> list[str]:
        return self._transport.requests

    def _run(self, sync: Any, aio: Any) -> Any:
        if self._runner is None:
            return sync()
        return self._runner.run(aio())

    def send(self, type: str, payload: Mapping[str, Any], **kw: Any) -> Accepted:
        result = self._run(lambda: self.client_sync.send(type, payload, **kw),
                           lambda: self.client_aio.send(type, payload, **kw))  # fmt: skip
        assert isinstance(result, Accepted)
        return result

    def send_batch(self, events: Sequence[Mapping[str, Any]]) -> list[Accepted | Rejected]:
        results: list[Accepted | Rejected] = self._run(
            lambda: self.client_sync.send_batch(events), lambda: self.client_aio.send_batch(events)
        )
        return results

    def get(self, event_id: str) -> dict[str, Any]:
        item: dict[str, Any] = self._run(lambda: self.client_sync.get(event_id),
                                         lambda: self.client_aio.get(event_id))  # fmt: skip
        return item

    def failed(self, **kw: Any) -> list[dict[str, Any]]:
        async def collect() -> list[dict[str, Any]]:
            return [item async for item in self.client_aio.failed(**kw)]

        items: list[dict[str, Any]] = self._run(lambda: list(self.client_sync.failed(**kw)), collect)
        return items

    def replay_dead(self, event_id: str | None = None, **kw: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._run(lambda: self.client_sync.replay_dead(event_id, **kw),
                                           lambda: self.client_aio.replay_dead(event_id, **kw))  # fmt: skip
        return answer

    @property
    def client_sync(self) -> Client:
        assert self.sync is not None
        return self.sync

    @property
    def client_aio(self) -> AsyncClient:
        assert self.aio is not None
        return self.aio

    def close(self) -> None:
        if self._runner is None:
            self.client_sync.close()
            return
        self._runner.run(self.client_aio.aclose())
        self._runner.close()


@dataclass
class Deployment:
    cluster: Cluster
    api: Api
    shaky: Api  # an API whose Redis is behind ``redis_proxy``
    redis_proxy: FaultProxy
    api_proxy: FaultProxy  # in front of ``api``
    admin_key: str

    def key(self, scope: str, rate: float | None = None, burst: int | None = None) -> str:
        """A new API key of ``scope`` (with its own rate limit when given), straight in Redis."""
        return asyncio.run(create_key(self.cluster.redis_url, self.cluster.prefix, scope, rate, burst))

    def received(self) -> int:
        """The API's exact count of events accepted (duplicates not included)."""
        r = httpx.get(
            f"{self.api.url}/metrics",
            headers={"Accept": "application/json", "Authorization": f"Bearer {self.admin_key}"},
        )
        assert r.status_code == 200, r.text
        count: int = r.json()["received"]
        return count


async def create_key(redis_url: str, prefix: str, scope: str, rate: float | None, burst: int | None) -> str:
    redis = await connect(redis_url)
    try:
        _, token = await KeyRegistry(Broker(redis, Keys(prefix))).create(
            f"{scope}-{uuid.uuid4().hex[:6]}", scope, rate, burst
        )
        return token
    finally:
        await redis.aclose()


MakeProducer = Callable[..., Producer]
