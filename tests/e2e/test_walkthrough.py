"""The README walkthrough with examples/shop.py, over HTTP against real processes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.http import get_metrics
from tests.support.processes import Cluster
from tests.support.waiting import wait_for

SHOP = "examples.shop:app"


def event(client: httpx.Client, event_id: str) -> dict[str, Any]:
    r = client.get(f"/events/{event_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def post(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post("/events", json=body)
    assert r.status_code == 202, r.text
    event_id: str = r.json()["eventId"]
    return event_id


def settled(client: httpx.Client, event_id: str, status: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal seen
        seen = event(client, event_id)
        return seen if seen["status"] == status else None

    return wait_for(probe, f"event {event_id} to be {status}", timeout=30, last=lambda: seen)


def test_readme_walkthrough_with_the_shop_example(cluster: Cluster, client: httpx.Client) -> None:
    worker = cluster.start_worker(SHOP)

    # Send an event; send one idempotently, twice; bad input is refused.
    login = post(client, {"type": "LOGIN", "payload": {"user": "khushi"}})
    order = {"type": "PAYMENT", "payload": {"order": 1042, "amount": 25}}
    r = client.post("/events", json=order, headers={"Idempotency-Key": "order-1042"})
    assert r.status_code == 202, r.text
    assert r.json()["duplicate"] is False
    payment = r.json()["eventId"]
    r = client.post("/events", json=order, headers={"Idempotency-Key": "order-1042"})
    assert r.status_code == 200, r.text
    assert (r.json()["duplicate"], r.json()["eventId"]) == (True, payment)
    r = client.post("/events", json={"type": "LOGIN", "payload": "not an object"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "$.payload" in r.json()["detail"]

    # The payment took three attempts; newest first.
    assert settled(client, login, "processed")["attempts"] == 1
    paid = settled(client, payment, "processed")
    assert paid["attempts"] == 3, "the provider answers on the third try"
    assert paid["idempotencyKey"] == "order-1042"
    page = client.get("/events", params={"limit": 2}).json()
    assert [it["id"] for it in page["items"]] == [payment, login]
    assert page["items"][0]["payload"] == {"order": 1042, "amount": 25}

    # An event that keeps failing ends in the DLQ with its reason and attempts.
    email = post(client, {"type": "EMAIL", "payload": {"to": "khushi@example.com"}})
    dead = settled(client, email, "dead")
    assert dead["attempts"] == 3
    assert "SMTP server refused khushi@example.com (gave up after 3 attempts)" in dead["reason"]
    [failed] = client.get("/failed-events").json()["items"]
    assert (failed["id"], failed["type"], failed["attempts"]) == (email, "EMAIL", 3)
    assert "Traceback" in failed["traceback"]
    first_failure = failed["failedAt"]
    m = get_metrics(client)
    assert (m["received"], m["duplicates"], m["processed"], m["deadLettered"], m["dlq"]) == (3, 1, 2, 1, 1)
    assert (m["failed"], m["retried"]) == (2 + 3, 2 + 2)

    # Replay it over HTTP: same id, attempts counted afresh; EMAIL always fails, so it
    # ends in the DLQ again after three new attempts.
    r = client.post(f"/failed-events/{email}/replay")
    assert r.status_code == 202, r.text
    assert r.json() == {"replayed": 1, "eventId": email}
    wait_for(lambda: get_metrics(client)["deadLettered"] == 2, "the replayed EMAIL to die again", timeout=30)
    again = settled(client, email, "dead")
    assert again["attempts"] == 3, "attempts are counted afresh after a replay"
    [failed] = client.get("/failed-events").json()["items"]
    assert (failed["id"], failed["attempts"]) == (email, 3)
    assert failed["failedAt"] > first_failure
    m = get_metrics(client)
    assert (m["replayed"], m["deadLettered"], m["dlq"], m["processed"]) == (1, 2, 1, 2)
    assert (m["failed"], m["retried"]) == (2 + 3 + 3, 2 + 2 + 2)

    # Delete it for good.
    r = client.delete(f"/failed-events/{email}")
    assert r.status_code == 204, r.text
    assert client.get(f"/failed-events/{email}").status_code == 404
    assert client.get(f"/events/{email}").status_code == 404
    assert client.delete(f"/failed-events/{email}").status_code == 404
    assert client.get("/failed-events").json()["items"] == []
    m = get_metrics(client)
    assert (m["deleted"], m["dlq"], m["queued"], m["pending"], m["scheduled"]) == (1, 0, 0, 0, 0)

    # Prometheus text by default.
    text = client.get("/metrics").text
    assert "eventstream_received_total 3.0" in text
    assert "eventstream_processed_total 2.0" in text
    assert "eventstream_dead_lettered_total 2.0" in text
    cluster.stop(worker)
