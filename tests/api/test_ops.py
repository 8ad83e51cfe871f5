"""GET /metrics (Prometheus and JSON), /healthz, /readyz, /openapi.json, unknown routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families

from eventstream.app import EventStream
from eventstream.errors import PermanentError
from eventstream.event import Event
from tests.support.asgi import Api, assert_problem

SUMMARY_KEYS = {
    "received",
    "processed",
    "failed",
    "retried",
    "deadLettered",
    "duplicates",
    "queued",
    "pending",
    "scheduled",
    "dlq",
}


def workload_app() -> EventStream:
    app = EventStream()
    tries: dict[str, int] = {}

    @app.handler("OK")
    async def ok(event: Event) -> None:
        return None

    @app.handler("FLAKY", max_attempts=3)
    async def flaky(event: Event) -> None:
        tries[event.id] = tries.get(event.id, 0) + 1
        if tries[event.id] == 1:
            raise RuntimeError("first try fails")

    @app.handler("BAD")
    async def bad(event: Event) -> None:
        raise PermanentError("never")

    return app


async def run_workload(api: Api) -> None:
    """6 accepted (3 OK, 1 FLAKY, 1 BAD, 1 without handler), 1 duplicate, 1 rejected;
    then 2 more OK left queued."""
    for i in range(3):
        await api.accepted("OK", {"i": i}, headers={"Idempotency-Key": f"ok-{i}"})
    dup = await api.post("OK", {"i": 0}, headers={"Idempotency-Key": "ok-0"})
    assert dup.status_code == 200
    await api.accepted("FLAKY", {})
    await api.accepted("BAD", {})
    await api.accepted("NOHANDLER", {})
    assert (await api.client.post("/events", json={"type": "OK"})).status_code == 422
    await api.burst(workload_app())
    await api.accepted("OK", {"late": 1})
    await api.accepted("OK", {"late": 2})


EXPECTED = {
    "received": 8,
    "processed": 4,  # 3 OK + FLAKY on its second try
    "failed": 2,  # FLAKY's first try, BAD's only try; no handler ran for NOHANDLER
    "retried": 1,
    "deadLettered": 2,  # BAD, NOHANDLER
    "duplicates": 1,
    "queued": 2,
    "pending": 0,
    "scheduled": 0,
    "dlq": 2,
}


async def test_json_summary_after_a_known_workload(api: Api) -> None:
    fresh = await api.summary()
    assert set(fresh) >= SUMMARY_KEYS
    assert all(fresh[k] == 0 for k in SUMMARY_KEYS)

    await run_workload(api)
    r = await api.client.get("/metrics", headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    summary = r.json()
    assert {k: summary[k] for k in SUMMARY_KEYS} == EXPECTED
    assert all(isinstance(v, int) for v in summary.values())


async def test_prometheus_text_after_a_known_workload(api: Api) -> None:
    await run_workload(api)
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert families
    assert all(name.startswith("eventstream_") for name in families)

    def value(family: str, sample: str | None = None) -> float:
        wanted = sample or family
        [v] = [s.value for s in families[family].samples if s.name == wanted]
        return v

    assert families["eventstream_received"].type == "counter"
    assert value("eventstream_received", "eventstream_received_total") == 8
    assert value("eventstream_processed", "eventstream_processed_total") == 4
    assert value("eventstream_failed", "eventstream_failed_total") == 2
    assert value("eventstream_retried", "eventstream_retried_total") == 1
    assert value("eventstream_dead_lettered", "eventstream_dead_lettered_total") == 2
    assert value("eventstream_duplicates", "eventstream_duplicates_total") == 1
    assert families["eventstream_queued"].type == "gauge"
    assert value("eventstream_queued") == 2
    assert value("eventstream_pending") == 0
    assert value("eventstream_scheduled") == 0
    assert value("eventstream_dlq") == 2
    handler = families["eventstream_handler_duration_seconds"]
    assert handler.type == "histogram"
    count = [s.value for s in handler.samples if s.name.endswith("_count")]
    assert count == [4]
    inf = [s.value for s in handler.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert inf == [4]


async def test_json_is_chosen_only_when_asked(api: Api) -> None:
    r = await api.client.get("/metrics", headers={"Accept": "text/plain"})
    assert r.headers["content-type"].startswith("text/plain")
    r = await api.client.get("/metrics", headers={"Accept": "text/html, application/json;q=0.9"})
    assert r.headers["content-type"].startswith("application/json")


async def test_healthz(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz(api: Api) -> None:
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"redis": "ok", "store": "ok"}}


async def test_readyz_is_503_when_redis_is_unreachable(down_api: Api) -> None:
    r = await down_api.client.get("/readyz")
    body = assert_problem(r, 503, "redis")
    assert int(r.headers["retry-after"]) >= 1
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert (await down_api.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/events/some-id"),
        ("GET", "/failed-events"),
        ("GET", "/failed-events/some-id"),
        ("POST", "/failed-events/some-id/replay"),
        ("POST", "/failed-events/replay"),
        ("DELETE", "/failed-events/some-id"),
        ("GET", "/metrics"),
    ],
)
async def test_redis_down_is_503_never_500(down_api: Api, method: str, url: str) -> None:
    r = await down_api.client.request(method, url)
    assert_problem(r, 503)
    assert int(r.headers["retry-after"]) >= 1


async def test_processed_events_are_not_listed_by_an_api_that_never_reached_redis(down_api: Api) -> None:
    # whether API keys exist is unknown: fail closed (tests/security/test_anonymous.py lists
    # them from the store once the API has learned there are none, then loses Redis)
    r = await down_api.client.get("/events")
    assert_problem(r, 503, "API keys")


EXPECTED_ROUTES = {
    ("POST", "/events"),
    ("GET", "/events"),
    ("POST", "/events/batch"),
    ("GET", "/events/{event_id}"),
    ("GET", "/failed-events"),
    ("GET", "/failed-events/{event_id}"),
    ("POST", "/failed-events/replay"),
    ("POST", "/failed-events/{event_id}/replay"),
    ("DELETE", "/failed-events/{event_id}"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
}


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


async def test_openapi_document(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    assert documented >= EXPECTED_ROUTES
    served = {
        (m, route.path)
        for route in api.app.routes
        if isinstance(route, APIRoute)
        for m in route.methods or ()
    }
    assert served <= documented

    schemas = doc["components"]["schemas"]
    incoming = schemas["IncomingEvent"]
    assert set(incoming["required"]) == {"type", "payload"}
    assert {"type", "payload", "source", "severity", "timestamp", "id"} <= set(incoming["properties"])
    assert incoming["properties"]["payload"]["type"] == "object"
    post = doc["paths"]["/events"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IncomingEvent"
    }
    assert {"202", "200", "413", "422", "503"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "BatchBody" in schemas
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref


async def test_unknown_route_is_404_problem(api: Api) -> None:
    assert_problem(await api.client.get("/no/such/route"), 404)
    assert_problem(await api.client.post("/nope", json={}), 404)


@pytest.mark.parametrize(
    ("method", "url"),
    [("PUT", "/events"), ("DELETE", "/events"), ("PATCH", "/failed-events/x"), ("POST", "/metrics")],
)
async def test_wrong_method_is_405_problem(api: Api, method: str, url: str) -> None:
    r = await api.client.request(method, url)
    assert_problem(r, 405)
    assert r.headers.get("allow")
