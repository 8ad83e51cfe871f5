"""The ingest fast path (eventstream.api.fastpath) answers POST /events and /events/batch
as the middleware stack does: the same status, headers and body for every kind of
answer (accepted, duplicate, invalid, too large, refused by the guard, rate-limited,
an unexpected error), and it is the path those requests take."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from eventstream.api.fastpath import IngestFastPath
from eventstream.settings import Settings
from tests.support.asgi import Api, assert_problem, spy_on_fast_path
from tests.support.auth import bearer, create_key, running

VARYING = {"date", "ratelimit-reset", "retry-after"}  # clock-dependent values


def answer(r: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What a client sees, with the values that differ between two runs (event ids,
    clock-dependent headers) blanked."""
    headers = {k: "…" if k in VARYING else v for k, v in r.headers.items()}
    body = r.json()
    for item in [body, *(body.get("results", []) if isinstance(body, dict) else [])]:
        if isinstance(item, dict) and "eventId" in item:
            item["eventId"] = "…"
    if isinstance(body, dict) and "detail" in body:  # names the caller's key
        body["detail"] = re.sub(r"API key \w+", "API key …", body["detail"])
        headers["content-length"] = "…"
    return r.status_code, headers, body


def fast_path(api: Api) -> IngestFastPath:
    """The app's fast path, taken whether or not another test of this process set up
    OpenTelemetry (which makes it step aside: tests/observability)."""
    fast = api.app.fast_path
    assert fast is not None
    fast.observed = lambda: False
    return fast


PROBE = """
import sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from eventstream.api.fastpath import telemetry_configured
seen = [telemetry_configured()]
if sys.argv[1] == "traces":
    trace.set_tracer_provider(TracerProvider())
else:
    metrics.set_meter_provider(MeterProvider())
seen.append(telemetry_configured())
print(seen)
"""


@pytest.mark.parametrize("provider", ["traces", "metrics"])
def test_opentelemetry_counts_as_set_up_once_a_provider_is_set(provider: str) -> None:
    """In a process of its own: OpenTelemetry allows one provider per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", PROBE, provider], capture_output=True, text=True,
                         env=env, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[False, True]"


def anonymous_requests(tag: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
    event = {"type": "T", "payload": {"n": 1}}
    return [
        ("/events", {"json": event}),
        ("/events", {"json": event, "headers": {"Idempotency-Key": f"k-{tag}"}}),
        ("/events", {"json": event, "headers": {"Idempotency-Key": f"k-{tag}"}}),  # duplicate
        ("/events", {"json": {"type": "T", "payload": {"n": 2}}, "headers": {"Idempotency-Key": f"k-{tag}"}}),
        ("/events", {"content": b"{nope"}),
        ("/events", {"content": b""}),
        ("/events", {"json": {"type": "T", "payload": "x"}}),
        ("/events?x=1", {"json": event}),
        ("/events", {"content": b"x" * (limit + 1)}),
        ("/events", {"json": event, "headers": {"Authorization": "Basic abc"}}),
        ("/events", {"json": event, "headers": {"Authorization": "Bearer es_unknown"}}),
        ("/events/batch", {"json": {"events": [event, {"type": ""}, event]}}),
        ("/events/batch", {"json": {"events": []}}),
        ("/events/batch", {"content": b"[1]"}),
    ]


async def test_anonymous_answers_are_the_stacks(settings: Settings) -> None:
    async with running(settings, loopback=True) as api:
        fast = fast_path(api)
        seen: dict[str, list[tuple[int, dict[str, str], Any]]] = {}
        for tag, path in (("fast", fast), ("stack", None)):
            api.app.fast_path = path
            seen[tag] = [
                answer(await api.client.post(url, **kw))
                for url, kw in anonymous_requests(tag, settings.max_body_bytes)
            ]
        statuses = [202, 202, 200, 422, 422, 422, 422, 422, 413, 401, 401, 200, 422, 422]
        assert [s for s, _, _ in seen["fast"]] == statuses
        assert seen["fast"] == seen["stack"]
        assert api.app.state.ingest_refused == {422: 2 * 7, 413: 2, 401: 4}


async def test_answers_with_keys_are_the_stacks(settings: Settings) -> None:
    async with running(settings) as api:
        fast = fast_path(api)
        seen: dict[str, list[tuple[int, dict[str, str], Any]]] = {}
        for tag, path in (("fast", fast), ("stack", None)):
            api.app.fast_path = path
            ingest = bearer(await create_key(api, "ingest", name=tag, rate=0.001, burst=3))
            read = bearer(await create_key(api, "read", name=f"{tag}-read"))
            event = {"type": "T", "payload": {}}
            two = {"events": [event, event]}
            seen[tag] = [
                answer(await api.client.post("/events", json=event, headers=ingest)),
                answer(await api.client.post("/events/batch", json=two, headers=ingest)),
                answer(await api.client.post("/events", json=event, headers=ingest)),  # over the burst
                answer(await api.client.post("/events", json=event)),  # keys exist: anonymous refused
                answer(await api.client.post("/events", json=event, headers=read)),  # wrong scope
            ]
        assert [s for s, _, _ in seen["fast"]] == [202, 200, 429, 401, 403]
        assert "ratelimit-remaining" in seen["fast"][0][1]
        assert seen["fast"] == seen["stack"]


async def test_an_unexpected_error_on_the_fast_path_is_a_plain_500_problem(api: Api) -> None:
    async def broken(request: object) -> httpx.Response:
        raise RuntimeError("cannot reach 10.1.2.3:6379 with password hunter2")

    fast_path(api).routes["/events"] = broken  # type: ignore[assignment]
    r = await api.client.post("/events", json={"type": "T", "payload": {}})
    body = assert_problem(r, 500)
    assert body["detail"] == "unexpected server error; it has been logged"
    assert "hunter2" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"
    assert api.app.state.ingest_refused == {500: 1}


async def test_ingest_takes_the_fast_path_and_other_routes_the_stack(api: Api) -> None:
    fast_path(api)
    taken = spy_on_fast_path(api.app)
    assert (await api.client.post("/events", json={"type": "T", "payload": {}})).status_code == 202
    assert (await api.client.post("/events/batch", json={"events": [{"type": "T"}]})).status_code == 200
    assert (await api.client.get("/events")).status_code == 200
    assert (await api.client.post("/events/", json={"type": "T", "payload": {}})).status_code != 202
    assert taken == ["/events", "/events/batch"]


@pytest.mark.parametrize("origin", ["https://app.example", None])
async def test_with_cors_on_a_request_from_a_page_takes_the_stack(
    settings: Settings, origin: str | None
) -> None:
    cors = settings.model_copy(update={"cors_origins": "https://app.example"})
    async with running(cors, loopback=True) as api:
        fast_path(api)
        taken = spy_on_fast_path(api.app)
        headers = {"Origin": origin} if origin else {}
        r = await api.client.post("/events", json={"type": "T", "payload": {}}, headers=headers)
        assert r.status_code == 202
        if origin:
            assert r.headers["access-control-allow-origin"] == origin
            assert taken == []
        else:
            assert taken == ["/events"]
