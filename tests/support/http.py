"""Talking to a real API process over HTTP: metrics, draining, paging.

``get_metrics`` and ``page_all`` expect every answer to be a 200; ``get_ok``,
``metrics`` and ``page`` retry a 503, for the outage tests whose Redis comes back
under the API (each pooled connection to the old server fails one request).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.waiting import wait_for


def get_metrics(client: httpx.Client) -> dict[str, int]:
    r = client.get("/metrics", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    data: dict[str, int] = r.json()
    return data


def live(m: dict[str, int]) -> int:
    """Events not yet settled for good: queued + in flight + waiting for a retry."""
    return m["queued"] + m["pending"] + m["scheduled"]


def wait_drained(client: httpx.Client, received: int, timeout: float = 60.0) -> dict[str, int]:
    """Poll /metrics until ``received`` events were accepted and none is live; return the metrics."""
    seen: dict[str, int] = {}

    def probe() -> dict[str, int] | None:
        nonlocal seen
        seen = get_metrics(client)
        return seen if seen["received"] >= received and live(seen) == 0 else None

    return wait_for(probe, f"{received} events to be settled", timeout, 0.1, last=lambda: seen)


def page_all(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged listing (GET /events, GET /failed-events), following nextCursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        query = {"limit": 1000, **params}
        if cursor:
            query["cursor"] = cursor
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["items"])
        cursor = body["nextCursor"]
        if not cursor:
            return items
    raise AssertionError(f"{path} paging does not end")


def get_ok(client: httpx.Client, path: str, timeout: float = 10.0, **kwargs: Any) -> httpx.Response:
    """GET that retries a 503: after Redis comes back, each pooled connection to the old
    server fails one request (redis-py does not retry by itself, on purpose)."""
    seen: list[httpx.Response] = []

    def probe() -> httpx.Response | None:
        r = client.get(path, **kwargs)
        seen.append(r)
        return None if r.status_code == 503 else r

    r = wait_for(probe, f"GET {path} to answer", timeout, 0.05, last=lambda: seen[-1].text)
    assert r.status_code == 200, r.text
    return r


def metrics(client: httpx.Client) -> dict[str, int]:
    data: dict[str, int] = get_ok(client, "/metrics", headers={"Accept": "application/json"}).json()
    return data


def page(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        body = get_ok(client, path, params=params).json()
        items += body["items"]
        cursor = body["nextCursor"]
        if not cursor:
            return items
