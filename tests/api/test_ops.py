"""GET /metrics (Prometheus and JSON), /healthz, /readyz, /openapi.json, unknown routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from eventstream.app import EventStream
from eventstream.broker import Layout
from eventstream.broker.keys import order_digest
from eventstream.errors import PermanentError
from eventstream.event import Event
from eventstream.ingest.accept import now_ms
from eventstream.ops import metrics
from tests.support.asgi import Api, MakeApi, assert_problem

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
        ("GET", "/metrics/history"),
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
    ("GET", "/metrics/history"),
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


def keys_in_partitions(layout: Layout, n: int) -> list[str]:
    """n ordering keys, each in another partition."""
    keys: dict[int, str] = {}
    for i in range(10_000):
        keys.setdefault(layout.partition_of(order_digest(f"key-{i}")), f"key-{i}")
        if len(keys) == n:
            return list(keys.values())
    raise AssertionError(f"no {n} keys in distinct partitions")


async def test_ordering_figures_in_json_prometheus_and_per_partition(make_api: MakeApi, redis: Redis) -> None:
    api = await make_api(partitions=4)
    layout = api.broker.layout
    a, b, c = keys_in_partitions(layout, 3)
    for key, n in ((a, 3), (b, 2), (c, 1)):  # each key's first is released, the others parked
        for i in range(n):
            await api.accepted("OK", {"i": i}, orderingKey=key)
    r: Any = redis
    firsts = [await r.zrange(part.waiting, 0, 0, withscores=True) for part in layout.parts]
    first_parked = min(int(score) for first in firsts for _, score in first)

    summary = await api.summary()
    assert (summary["received"], summary["queued"]) == (6, 3)
    assert (summary["parked"], summary["busyKeys"]) == (3, 3)
    assert (summary["parkedTotal"], summary["releasedTotal"]) == (3, 0)
    assert 0 <= summary["oldestParkedMs"] <= now_ms() - first_parked

    # the oldest wait is read against the clock the caller gives: exact
    snap = await metrics.snapshot(api.broker, first_parked + 2_500, 60_000)
    assert snap.gauges["oldest_parked_ms"] == 2_500
    text = metrics.render_prometheus(snap).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def values(family: str) -> dict[str, float]:
        return {s.labels.get("partition", ""): s.value for s in families[family].samples}

    assert values("eventstream_ordering_parked") == {"": 3}
    assert values("eventstream_ordering_busy_keys") == {"": 3}
    assert values("eventstream_ordering_oldest_wait_seconds") == {"": 2.5}
    assert values("eventstream_parked") == {"": 3}
    assert values("eventstream_released") == {"": 0}
    parked = dict.fromkeys(map(str, range(4)), 0.0)
    parked[str(layout.partition_of(order_digest(a)))] = 2
    parked[str(layout.partition_of(order_digest(b)))] = 1
    assert values("eventstream_partition_parked") == parked

    await api.burst(workload_app())  # each finished event releases the next of its key
    summary = await api.summary()
    assert (summary["processed"], summary["queued"]) == (6, 0)
    assert (summary["parked"], summary["busyKeys"], summary["oldestParkedMs"]) == (0, 0, 0)
    assert (summary["parkedTotal"], summary["releasedTotal"]) == (3, 3)
    families = {f.name: f for f in text_string_to_metric_families((await api.client.get("/metrics")).text)}
    assert values("eventstream_partition_parked") == dict.fromkeys(map(str, range(4)), 0.0)
    assert values("eventstream_released") == {"": 3}
