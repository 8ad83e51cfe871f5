"""API keys and scopes through the real HTTP stack (the ingest fast path included)."""

from __future__ import annotations

import asyncio

import pytest

from eventstream.auth.apikeys import KeyRegistry
from eventstream.auth.guard import NO_KEYS_TTL_S
from tests.support.asgi import Api, MakeApi, assert_problem
from tests.support.auth import EVENT, NewKey, bearer, create_key

BATCH = {"events": [EVENT, EVENT]}


def assert_401(r: object, *words: str) -> None:
    body = assert_problem(r, 401, *words)  # type: ignore[arg-type]
    assert body["status"] == 401
    assert r.headers["www-authenticate"].startswith("Bearer")  # type: ignore[attr-defined]


async def test_without_keys_loopback_accepts_anonymous_requests(api: Api) -> None:
    assert (await api.client.post("/events", json=EVENT)).status_code == 202
    assert (await api.client.get("/events")).status_code == 200
    assert (await api.client.get("/failed-events")).status_code == 200


async def test_once_a_key_exists_ingest_without_a_key_is_refused_and_nothing_is_enqueued(
    api: Api, new_key: NewKey
) -> None:
    await new_key("ingest")
    r = await api.client.post("/events", json=EVENT)  # the fast path
    assert_401(r, "requires an API key")
    r = await api.client.post("/events/batch", json=BATCH)
    assert_401(r, "requires an API key")
    assert await api.stream_len() == 0
    assert (await api.counters()).get("received", 0) == 0


@pytest.mark.parametrize(("method", "path"), [("GET", "/events"), ("GET", "/failed-events"),
    ("GET", "/metrics"), ("GET", "/metrics/history"), ("GET", "/admin/audit"), ("DELETE", "/failed-events/x"),
    ("GET", "/keys"), ("POST", "/failed-events/replay"), ("GET", "/no-such-route")])  # fmt: skip
async def test_every_route_but_health_needs_a_key_once_one_exists(
    api: Api, new_key: NewKey, method: str, path: str
) -> None:
    await new_key("admin")
    assert_401(await api.client.request(method, path))


async def test_health_readiness_and_the_document_stay_open(api: Api, new_key: NewKey) -> None:
    await new_key("admin")
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert (await api.client.get(path)).status_code == 200, path


async def test_metrics_can_be_opened_for_scrapers(make_api: MakeApi) -> None:
    api = await make_api(metrics_public=True)
    await create_key(api, "admin")
    assert (await api.client.get("/metrics")).status_code == 200
    assert_401(await api.client.get("/events"))
    assert_401(await api.client.get("/metrics/history"))  # a dashboard's, not a scraper's


async def test_a_valid_key_is_accepted_as_bearer_or_x_api_key(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest")
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    assert (await api.client.post("/events", json=EVENT, headers={"X-API-Key": token})).status_code == 202
    r = await api.client.post("/events/batch", json=BATCH, headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["accepted"] == 2
    assert await api.stream_len() == 4


async def test_unknown_id_and_wrong_secret_get_the_same_answer(api: Api, new_key: NewKey) -> None:
    token = await new_key("admin")
    _, key_id, secret = token.split("_", 2)
    wrong_secret = f"es_{key_id}_{'A' * len(secret)}"
    unknown_id = f"es_{'0' * 12}_{secret}"
    a = await api.client.get("/events", headers=bearer(wrong_secret))
    b = await api.client.get("/events", headers=bearer(unknown_id))
    assert_401(a, "not valid")
    assert_401(b, "not valid")
    assert a.json() == b.json()
    assert a.headers["www-authenticate"] == b.headers["www-authenticate"]
    assert 'error="invalid_token"' in a.headers["www-authenticate"]
    assert key_id not in a.text


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-key", "Token x"])
async def test_malformed_credentials_are_refused(api: Api, new_key: NewKey, value: str) -> None:
    await new_key("admin")
    assert_401(await api.client.get("/events", headers={"Authorization": value}))


async def test_a_malformed_key_is_refused_even_without_any_key(api: Api) -> None:
    assert_401(await api.client.get("/events", headers=bearer("es_nothing")), "not valid")


async def test_a_revoked_key_is_refused_on_its_next_request(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest")
    assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202
    await KeyRegistry(api.broker).revoke(token.split("_")[1])
    r = await api.client.post("/events", json=EVENT, headers=bearer(token))
    assert_401(r, "revoked")
    assert await api.stream_len() == 1


@pytest.mark.parametrize(("scope", "method", "path"), [
    ("ingest", "GET", "/events"), ("ingest", "GET", "/metrics"), ("ingest", "GET", "/metrics/history"),
    ("ingest", "GET", "/failed-events"),
    ("ingest", "DELETE", "/failed-events/x"), ("read", "POST", "/events"), ("read", "POST", "/events/batch"),
    ("read", "POST", "/failed-events/replay"), ("read", "DELETE", "/failed-events/x"),
    ("read", "GET", "/keys"), ("read", "GET", "/admin/audit"), ("read", "POST", "/keys"),
    ("ingest", "POST", "/a-route-added-later"), ("read", "PUT", "/events"),
])  # fmt: skip
async def test_a_key_outside_its_scope_gets_403(
    api: Api, new_key: NewKey, scope: str, method: str, path: str
) -> None:
    token = await new_key(scope)
    r = await api.client.request(method, path, json=EVENT, headers=bearer(token))
    body = assert_problem(r, 403, scope)
    assert "admin" in body["detail"]
    assert await api.stream_len() == 0


async def test_read_scope_reads_and_admin_does_everything(api: Api, new_key: NewKey) -> None:
    read, admin = await new_key("read"), await new_key("admin")
    for path in ("/events", "/failed-events", "/metrics", "/metrics/history"):
        assert (await api.client.get(path, headers=bearer(read))).status_code == 200, path
    assert (await api.client.post("/events", json=EVENT, headers=bearer(admin))).status_code == 202
    assert (await api.client.get("/admin/audit", headers=bearer(admin))).status_code == 200
    r = await api.client.post("/failed-events/replay", headers=bearer(admin))
    assert r.status_code == 202


async def test_not_on_loopback_anonymous_is_refused_even_without_keys(make_api: MakeApi) -> None:
    api = await make_api(loopback=False)
    assert_401(await api.client.post("/events", json=EVENT), "requires an API key")
    assert await api.stream_len() == 0


async def test_insecure_accepts_anonymous_until_a_key_exists(make_api: MakeApi) -> None:
    api = await make_api(loopback=False, insecure=True)
    assert (await api.client.post("/events", json=EVENT)).status_code == 202


async def test_a_new_key_switches_a_running_api_to_keys_required_within_the_cache_time(api: Api) -> None:
    assert (await api.client.get("/events")).status_code == 200
    await create_key(api, "admin")
    deadline = asyncio.get_running_loop().time() + NO_KEYS_TTL_S + 2
    while (await api.client.get("/events")).status_code == 200:
        assert asyncio.get_running_loop().time() < deadline, "still anonymous after the cache time"
        await asyncio.sleep(0.05)
    assert_401(await api.client.get("/events"))


async def test_the_last_used_time_is_recorded(api: Api, new_key: NewKey) -> None:
    token = await new_key("read")
    registry = KeyRegistry(api.broker)
    assert (await registry.get(token.split("_")[1])).last_used_ms is None
    await api.client.get("/events", headers=bearer(token))
    assert (await registry.get(token.split("_")[1])).last_used_ms is not None


async def test_a_revoked_last_key_does_not_reopen_the_api(api: Api, new_key: NewKey) -> None:
    token = await new_key("admin")
    await KeyRegistry(api.broker).revoke(token.split("_")[1])
    assert_401(await api.client.get("/events"), "requires an API key")
