"""Concurrent duplicate posts over real HTTP: one event, however many racing requests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from tests.support.effects import count_side_effects
from tests.support.http import wait_drained
from tests.support.processes import Api, Cluster

RACERS = 50
T = TypeVar("T")


async def race(api: Api, body: dict[str, Any], headers: dict[str, str]) -> list[httpx.Response]:
    """RACERS identical POST /events at once, each on its own connection."""
    limits = httpx.Limits(max_connections=RACERS, max_keepalive_connections=RACERS)
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0, limits=limits) as http:
        go = asyncio.Event()

        async def post() -> httpx.Response:
            await go.wait()
            return await http.post("/events", json=body, headers=headers)

        tasks = [asyncio.create_task(post()) for _ in range(RACERS)]
        await asyncio.sleep(0)
        go.set()
        return await asyncio.gather(*tasks)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop (never touching the current thread's event loop)."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coro)


def check_one_winner(responses: list[httpx.Response]) -> str:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 1, 200: RACERS - 1}, statuses
    bodies = [r.json() for r in responses]
    event_ids = {b["eventId"] for b in bodies}
    assert len(event_ids) == 1, f"duplicates answered with different event ids: {event_ids}"
    winner = next(b for r, b in zip(responses, bodies, strict=True) if r.status_code == 202)
    assert winner["duplicate"] is False
    assert all(b["duplicate"] is True for r, b in zip(responses, bodies, strict=True) if r.status_code == 200)
    return event_ids.pop()


def test_concurrent_posts_with_one_idempotency_key_make_one_event(
    cluster: Cluster, api: Api, client: httpx.Client
) -> None:
    header_race = race(api, {"type": "OK", "payload": {"order": 1}}, {"Idempotency-Key": "order-1-paid"})
    by_header = check_one_winner(run(header_race))
    # The same race keyed by the body's "id" instead of the header.
    body_race = race(api, {"id": "order-2", "type": "OK", "payload": {"order": 2}}, {})
    by_body = check_one_winner(run(body_race))
    assert by_header != by_body

    worker = cluster.start_worker()
    metrics = wait_drained(client, 2, timeout=30)
    assert metrics["received"] == 2
    assert metrics["duplicates"] == 2 * (RACERS - 1)
    assert metrics["processed"] == 2
    assert count_side_effects(cluster.side_file, "OK") == Counter([by_header, by_body])
    for event_id in (by_header, by_body):
        r = client.get(f"/events/{event_id}")
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["attempts"]) == ("processed", 1), r.json()
    assert client.get(f"/events/{by_header}").json()["idempotencyKey"] == "order-1-paid"

    # After processing, the key still answers duplicate with the same event id; reused
    # for another event, it is refused.
    again = {"type": "OK", "payload": {"order": 1}}
    r = client.post("/events", json=again, headers={"Idempotency-Key": "order-1-paid"})
    assert r.status_code == 200, r.text
    assert r.json()["eventId"] == by_header
    other = {"type": "OK", "payload": {}}
    r = client.post("/events", json=other, headers={"Idempotency-Key": "order-1-paid"})
    assert r.status_code == 422, r.text
    cluster.stop(worker)
