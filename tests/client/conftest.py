"""The producers against REAL processes: one API and one worker per module, on the session's
Redis, with API keys; a second API whose Redis goes through a fault proxy (503s); and a
fault proxy in front of the first API (lost replies). ``make_producer`` runs each test
with the sync ``Client`` and then the ``AsyncClient`` (tests/support/producers.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import processes
from tests.support.producers import Deployment, MakeProducer, Producer, create_key
from tests.support.proxy import FaultProxy


@pytest.fixture(scope="module")
def deployment(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    tmp = tmp_path_factory.mktemp("producers")
    admin = asyncio.run(create_key(redis_url, prefix, "admin", None, None))
    redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with processes(redis_url, prefix, tmp, EVENTSTREAM_REDIS_TIMEOUT="1") as c:
        redis_proxy = FaultProxy(redis_port).start()
        api_proxy: FaultProxy | None = None
        try:
            c.start_worker()
            api = c.start_api()
            shaky = c.start_api(EVENTSTREAM_REDIS_URL=redis_proxy.url)
            api_proxy = FaultProxy(api.port).start()
            yield Deployment(c, api, shaky, redis_proxy, api_proxy, admin)
            for proc in c.procs:  # before the proxies: their connections end cleanly
                c.stop(proc)
        finally:
            redis_proxy.close()
            if api_proxy is not None:
                api_proxy.close()


@pytest.fixture(params=["sync", "async"])
def make_producer(request: pytest.FixtureRequest) -> Iterator[MakeProducer]:
    """``make_producer(url=None, api_key=None, **options)``: a client of the test's kind; by
    default of the module's ``deployment`` (started only then), with its admin key."""
    made: list[Producer] = []

    def make(url: str | None = None, api_key: str | None = None, **options: Any) -> Producer:
        if url is None or api_key is None:
            deployment: Deployment = request.getfixturevalue("deployment")
            url, api_key = url or deployment.api.url, api_key or deployment.admin_key
        p = Producer(request.param, url, api_key, **options)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def producer(make_producer: MakeProducer) -> Producer:
    return make_producer()
