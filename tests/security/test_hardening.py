"""Hardened input and responses: limits, hostile ids, errors without internals, headers, CORS."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest
import structlog
from redis.asyncio import Redis

from eventstream.app import default_app
from tests.support.asgi import Api, MakeApi, assert_problem
from tests.support.auth import EVENT, NewKey, bearer
from tests.support.servers import closed_port


async def test_every_answer_carries_security_headers(api: Api) -> None:
    for r in (
        await api.client.post("/events", json=EVENT),  # the fast path
        await api.client.get("/events"),
        await api.client.get("/healthz"),
        await api.client.get("/events/unknown"),  # an error
        await api.client.get("/openapi.json"),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def test_the_docs_page_is_not_broken_by_the_policy(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert "content-security-policy" not in r.headers
    assert r.headers["x-frame-options"] == "DENY"


async def test_401_and_429_carry_security_headers(api: Api, new_key: NewKey) -> None:
    await new_key("admin")
    r = await api.client.get("/events")
    assert r.status_code == 401
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_cors_is_closed_by_default(api: Api) -> None:
    r = await api.client.options(
        "/events", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers
    r = await api.client.get("/events", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_cors_allows_only_the_configured_origins(make_api: MakeApi) -> None:
    api = await make_api(cors_origins="https://app.example, https://admin.example")
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    r = await api.client.options("/events", headers={"Origin": "https://app.example", **pre})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = await api.client.options("/events", headers={"Origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in r.headers
    r = await api.client.get("/events", headers={"Origin": "https://admin.example"})
    assert r.headers["access-control-allow-origin"] == "https://admin.example"
    assert "ratelimit-remaining" in r.headers["access-control-expose-headers"].lower()


async def test_an_unexpected_error_is_a_plain_500_problem(api: Api) -> None:
    async def boom() -> None:
        raise RuntimeError("cannot reach 10.1.2.3:6379 with password hunter2")

    api.app.add_api_route("/boom", boom)
    r = await api.client.get("/boom")
    body = assert_problem(r, 500)
    assert body["detail"] == "unexpected server error; it has been logged"
    assert "10.1.2.3" not in r.text
    assert "hunter2" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_redis_down_names_no_address(make_api: MakeApi) -> None:
    port = closed_port()
    api = await make_api(redis_url=f"redis://127.0.0.1:{port}")
    for r in (await api.client.post("/events", json=EVENT), await api.client.get("/events/x")):
        assert_problem(r, 503)
        assert str(port) not in r.text
        assert "127.0.0.1" not in r.text


async def test_an_object_with_too_many_keys_is_422(make_api: MakeApi) -> None:
    api = await make_api(max_object_keys=3)
    ok = await api.client.post("/events", json={"type": "T", "payload": {"a": 1, "b": {"x": 1}, "c": 3}})
    assert ok.status_code == 202
    r = await api.client.post(
        "/events", json={"type": "T", "payload": {"a": {"b": 1, "c": 2, "d": 3, "e": 4}}}
    )
    body = assert_problem(r, 422, "more than 3 keys")
    assert body["errors"][0]["loc"] == "$.payload.a"
    r = await api.client.post(
        "/events/batch", json={"events": [{"type": "T", "payload": dict.fromkeys("abcd", 1)}]}
    )
    assert r.json()["results"][0]["status"] == 422
    assert await api.stream_len() == 1


async def test_a_string_too_long_is_422(make_api: MakeApi) -> None:
    api = await make_api(max_string_length=10)
    assert (
        await api.client.post("/events", json={"type": "T", "payload": {"a": ["x" * 10]}})
    ).status_code == 202
    r = await api.client.post("/events", json={"type": "T", "payload": {"a": ["ok", "x" * 11]}})
    assert_problem(r, 422, "longer than 10 characters")
    r = await api.client.post("/events", json={"type": "T", "payload": {"k" * 11: 1}})
    assert_problem(r, 422, "key longer than 10")
    assert await api.stream_len() == 1


async def test_a_body_over_the_limit_is_413_with_or_without_a_key(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=2048)
    big = json.dumps({"type": "T", "payload": {"a": "x" * 4096}})
    assert_problem(await api.client.post("/events", content=big), 413)
    batch = json.dumps({"events": [{"type": "T", "payload": {"a": "x" * 4096}}]})
    assert_problem(await api.client.post("/events/batch", content=batch), 413)
    from tests.support.auth import create_key

    token = await create_key(api, "ingest", rate=1000)
    assert_problem(await api.client.post("/events/batch", content=batch, headers=bearer(token)), 413)
    assert await api.stream_len() == 0


HOSTILE = ["a}b{c", "{x}", "*", "\n", "a\r\nSET x y", "?", "[a-z]", "../../etc", "é" * 80, "x" * 256]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_ids_never_become_redis_keys(redis: Redis, api: Api, hostile: str) -> None:
    tag = "{" + api.settings.prefix + "}"
    r = await api.client.post("/events", json={**EVENT, "id": hostile})
    assert r.status_code == 202, r.text
    header = hostile.replace("\n", "n").encode()  # headers are bytes: no newline, any other byte
    r2 = await api.client.post("/events", json=EVENT, headers={b"Idempotency-Key": header})
    assert r2.status_code in (202, 200), r2.text
    again = await api.client.post("/events", json={**EVENT, "id": hostile})
    assert again.json()["duplicate"] is True
    assert (await api.client.get("/events/" + quote(hostile, safe=""))).status_code == 404
    assert (await api.client.get("/failed-events", params={"type": hostile})).status_code == 422
    await api.burst(default_app())
    names = [k async for k in redis.scan_iter(match=f"*{api.settings.prefix}*", count=1000)]
    assert names
    for name in names:
        assert name.startswith(tag + ":"), name
        assert hostile not in name
        assert name.count("{") == 1
        assert name.count("}") == 1


@pytest.mark.parametrize("hostile", ["a}b{c", "*", "\n", "T\n", "a b", "x" * 129, ""])
async def test_hostile_types_are_refused(api: Api, hostile: str) -> None:
    r = await api.client.post("/events", json={"type": hostile, "payload": {}})
    assert_problem(r, 422, "type")
    assert await api.stream_len() == 0


async def test_redis_memory_over_its_share_of_maxmemory_is_503_for_ingest_only(
    redis: Redis, make_api: MakeApi
) -> None:
    api = await make_api(max_memory_ratio=0.00001, max_backlog=0)
    r = redis
    before = (await r.config_get("maxmemory"))["maxmemory"]
    await r.config_set("maxmemory", str(64 * 1024**3))  # far above use: nothing is evicted
    try:
        r1 = await api.client.post("/events", json=EVENT)
        body = assert_problem(r1, 503, "EVENTSTREAM_MAX_MEMORY_RATIO")
        assert r1.headers["retry-after"] == "1"
        assert body["status"] == 503
        assert_problem(await api.client.post("/events/batch", json={"events": [EVENT]}), 503)
        assert (await api.client.get("/failed-events")).status_code == 200  # reads keep working
        assert await api.stream_len() == 0
    finally:
        await r.config_set("maxmemory", before)


def test_console_tracebacks_never_show_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """An unexpected error while a request holds its key must not print the key."""
    from eventstream import logs

    secret = "es_0123456789ab_" + "S" * 43

    def authorize(token: str) -> None:
        raise RuntimeError("boom")

    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("info", "console")
    try:
        try:
            authorize(secret)
        except RuntimeError as exc:
            structlog.get_logger("t").exception("unexpected error", exc_info=exc)
    finally:
        structlog.configure(**saved)
        root.handlers, root.level = handlers, level
        logging.captureWarnings(False)
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    assert "authorize" in err
    assert secret not in err


async def test_a_backlog_at_its_bound_is_503_for_ingest_only(make_api: MakeApi) -> None:
    api = await make_api(max_backlog=2)
    for _ in range(2):
        assert (await api.client.post("/events", json=EVENT)).status_code == 202
    r = await api.client.post("/events", json=EVENT)
    assert_problem(r, 503, "EVENTSTREAM_MAX_BACKLOG")
    assert r.headers["retry-after"] == "1"
    assert (await api.client.get("/failed-events")).status_code == 200
    assert await api.stream_len() == 2
