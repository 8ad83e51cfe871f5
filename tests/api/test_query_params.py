"""Every route refuses a query parameter it does not declare (422), so a misspelt or
unsupported filter is never silently ignored."""

from __future__ import annotations

import pytest

from tests.support.asgi import Api, assert_problem


@pytest.mark.parametrize(
    ("method", "url", "name"),
    [
        ("GET", "/failed-events?since=2026-01-01T00:00:00Z", "since"),
        ("GET", "/events?limit=5&sort=asc", "sort"),
        ("GET", "/events/some-id?verbose=1", "verbose"),
        ("POST", "/events?async=true", "async"),
        ("POST", "/events/batch?atomic=1", "atomic"),
        ("GET", "/metrics?format=json", "format"),
        ("GET", "/healthz?x=1", "x"),
    ],
)
async def test_unknown_query_parameters_are_422(api: Api, method: str, url: str, name: str) -> None:
    body = {"type": "T", "payload": {}}
    r = await api.client.request(method, url, json={"events": [body]} if "batch" in url else body)
    assert_problem(r, 422, name, "query parameter")
    assert await api.stream_len() == 0


async def test_declared_query_parameters_are_served(api: Api) -> None:
    assert (await api.client.get("/events?limit=5&type=T")).status_code == 200
    assert (await api.client.get("/failed-events?limit=5")).status_code == 200
    assert (await api.client.get("/events")).status_code == 200
    # parameters declared by a route's dependencies count too
    r = await api.client.post("/failed-events/replay?dry_run=true&type=T&since=2026-01-01T00:00:00Z")
    assert r.status_code == 200, r.text
    assert (await api.client.post("/replay?dry_run=true&type=T")).status_code == 200
