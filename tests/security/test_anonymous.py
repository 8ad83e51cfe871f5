"""Anonymous use: when it is allowed, what it may not do (keys, foreign hosts and
origins), and failing closed when Redis cannot say whether keys exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from eventstream.api import create_app
from eventstream.auth.guard import is_loopback_host
from eventstream.broker import Keys
from tests.support.asgi import Api, MakeApi, assert_problem
from tests.support.auth import EVENT, NewKey, bearer, create_key, running
from tests.support.factories import make_settings
from tests.support.proxy import PASS, RESET, FaultProxy
from tests.support.servers import closed_port


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FaultProxy]:
    """A TCP proxy in front of the session's Redis, to cut it off mid-test."""
    p = FaultProxy(urlsplit(redis_url).port or 6379).start()
    try:
        yield p
    finally:
        p.close()


# --- key management needs a real admin key ---------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/keys"), ("GET", "/keys"), ("DELETE", "/keys/x")])
async def test_anonymous_callers_cannot_manage_keys(redis: Redis, api: Api, method: str, path: str) -> None:
    r = await api.client.request(method, path, json={"name": "mine", "scope": "admin"})
    assert_problem(r, 403, "eventstream keys create", "scope admin")
    assert not await redis.exists(Keys(api.settings.prefix).api_keys)


async def test_anonymous_callers_cannot_manage_keys_even_with_insecure(make_api: MakeApi) -> None:
    api = await make_api(loopback=False, insecure=True)
    r = await api.client.post("/keys", json={"name": "mine", "scope": "admin"})
    assert_problem(r, 403, "eventstream keys create")


# --- Host and Origin of anonymous requests ---------------------------------------


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:8000", "[::1]", "[::1]:8000", "127.9.9.9"]
)
async def test_anonymous_requests_naming_a_loopback_host_are_served(api: Api, host: str) -> None:
    r = await api.client.post("/events", json=EVENT, headers={"Host": host})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "10.0.0.1", "[::2]:80", "localhost.x"],
)
async def test_anonymous_requests_naming_another_host_are_403(api: Api, host: str) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: refused, nothing enqueued."""
    for r in (
        await api.client.post("/events", content=b'{"type":"T","payload":{}}', headers={"Host": host}),
        await api.client.get("/events", headers={"Host": host}),
        await api.client.post("/failed-events/replay", headers={"Host": host}),
    ):
        assert_problem(r, 403, "loopback host")
    assert await api.stream_len() == 0


async def test_a_key_may_name_any_host(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest")
    r = await api.client.post("/events", json=EVENT, headers={"Host": "events.example", **bearer(token)})
    assert r.status_code == 202


async def test_open_routes_answer_any_host(api: Api) -> None:
    assert (await api.client.get("/healthz", headers={"Host": "evil.example"})).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost:9999"])
async def test_anonymous_requests_from_a_foreign_web_page_are_403(api: Api, origin: str) -> None:
    """A page's "simple" text/plain POST carries its Origin: refused, nothing enqueued."""
    r = await api.client.post(
        "/events",
        content=b'{"type":"T","payload":{}}',
        headers={"Origin": origin, "Content-Type": "text/plain"},
    )
    assert_problem(r, 403, "origin", "EVENTSTREAM_CORS_ORIGINS")
    assert await api.stream_len() == 0


async def test_the_apis_own_pages_and_allowed_origins_may_call_anonymously(make_api: MakeApi) -> None:
    api = await make_api(cors_origins="https://app.example")
    own = await api.client.post("/events", json=EVENT, headers={"Origin": "http://127.0.0.1"})
    assert own.status_code == 202  # Swagger UI on /docs, same origin
    allowed = await api.client.post("/events", json=EVENT, headers={"Origin": "https://app.example"})
    assert allowed.status_code == 202
    assert_problem(await api.client.post("/events", json=EVENT, headers={"Origin": "https://b.example"}), 403)


async def test_insecure_checks_the_origin_but_not_the_host(make_api: MakeApi) -> None:
    api = await make_api(loopback=False, insecure=True)
    r = await api.client.post("/events", json=EVENT, headers={"Host": "api.internal:8000"})
    assert r.status_code == 202
    r = await api.client.post("/events", json=EVENT, headers={"Origin": "https://evil.example"})
    assert_problem(r, 403, "origin")


def test_loopback_host_names() -> None:
    for host in ("LOCALHOST:1", "localhost.", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("", "[::1", "0.0.0.0", "127.0.0.1.nip.io"):
        assert not is_loopback_host(host), host


# --- the default and the listen modes ----------------------------------------------


async def test_create_app_fails_closed_by_default(redis_url: str, prefix: str, tmp_path: Path) -> None:
    """`uvicorn --factory` on any address: no anonymous access unless asked for."""
    app = create_app(make_settings(redis_url, prefix, tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        r = await client.post("/events", json=EVENT)
        assert_problem(r, 401, "requires an API key")
        assert (await client.get("/healthz")).status_code == 200


# --- Redis down: 503, never open -------------------------------------------------


async def test_an_api_that_never_reached_redis_does_not_serve_anonymously(make_api: MakeApi) -> None:
    """Keys may exist: without an answer the store's reads are not served anonymously."""
    api = await make_api(redis_url=f"redis://127.0.0.1:{closed_port()}")
    for r in (await api.client.get("/events"), await api.client.post("/events/batch", json={"events": []})):
        body = assert_problem(r, 503, "not yet learned whether API keys exist")
        assert r.headers["retry-after"] == "1"
        assert body["status"] == 503


async def test_redis_down_with_a_key_is_503(
    redis_url: str, prefix: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    async with running(make_settings(proxy.url, prefix, tmp_path), loopback=True) as api:
        token = await create_key(api, "admin")
        assert (await api.client.get("/events", headers=bearer(token))).status_code == 200
        proxy.set(RESET)
        for r in (
            await api.client.get("/events", headers=bearer(token)),
            await api.client.post("/events/batch", json={"events": [EVENT]}, headers=bearer(token)),
        ):
            assert_problem(r, 503)
            assert "retry-after" in r.headers
        proxy.set(PASS)
        assert (await api.client.get("/events", headers=bearer(token))).status_code == 200


async def test_on_loopback_a_known_no_keys_answer_survives_redis_going_down(
    prefix: str, tmp_path: Path, proxy: FaultProxy
) -> None:
    async with running(make_settings(proxy.url, prefix, tmp_path), loopback=True) as api:
        assert (await api.client.get("/events")).status_code == 200  # learns: no keys
        proxy.set(RESET)
        r = await api.client.get("/events")  # the store alone answers this
        assert r.status_code == 200, r.text
        assert r.json() == {"items": [], "nextCursor": None}
        r = await api.client.post("/events", content=b'{"type": "T"}')  # validation needs no Redis
        assert_problem(r, 422, "payload")


async def test_insecure_with_redis_down_is_503(prefix: str, tmp_path: Path, proxy: FaultProxy) -> None:
    async with running(make_settings(proxy.url, prefix, tmp_path), insecure=True) as api:
        assert (await api.client.get("/events")).status_code == 200
        proxy.set(RESET)
        await _past_the_cache()
        assert_problem(await api.client.get("/events"), 503, "API keys")


async def _past_the_cache() -> None:
    import asyncio

    from eventstream.auth.guard import NO_KEYS_TTL_S

    await asyncio.sleep(NO_KEYS_TTL_S + 0.1)


# --- root_path --------------------------------------------------------------------


async def test_the_policy_applies_to_the_route_under_a_root_path(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    app = create_app(make_settings(redis_url, prefix, tmp_path), loopback=True)
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        api = Api(app, client)
        token = await create_key(api, "ingest")
        r = await client.post("/api/events", json=EVENT, headers=bearer(token))
        assert r.status_code == 202, r.text
        assert (await client.get("/api/healthz")).status_code == 200
        assert_problem(await client.get("/api/keys", headers=bearer(token)), 403, "ingest")


@pytest.mark.parametrize(
    "host", ["[::1]evil.example", "localhost:1@evil", "127.0.0.1:80@evil.example", "[::1]:80x", "localhost:x"]
)
async def test_a_loopback_name_followed_by_something_else_is_not_loopback(api: Api, host: str) -> None:
    """What follows the name must be a port: anything else may be another host to a proxy."""
    assert not is_loopback_host(host)
    r = await api.client.post("/events", content=b'{"type":"T","payload":{}}', headers={"Host": host})
    assert_problem(r, 403, "loopback host")
    assert await api.stream_len() == 0
