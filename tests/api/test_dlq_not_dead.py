"""A DLQ request for an event that exists but is not dead (a replayed one, queued or
retrying, or processed since) answers 404 saying where the event is; the CLI shows that."""

from __future__ import annotations

import pytest

from eventstream.app import EventStream
from eventstream.event import Event
from tests.support.asgi import Api, assert_problem, kill


def succeeding() -> EventStream:
    app = EventStream()

    @app.handler("*")
    async def ok(event: Event) -> None:
        return None

    return app


REQUESTS = [
    ("DELETE", "/failed-events/{}"),
    ("POST", "/failed-events/{}/replay"),
    ("GET", "/failed-events/{}"),
]


@pytest.mark.parametrize(("method", "path"), REQUESTS)
async def test_a_replayed_event_is_said_to_be_queued_then_processed(api: Api, method: str, path: str) -> None:
    [dead] = await kill(api, [("PERM", {})])
    assert (await api.client.post(f"/failed-events/{dead}/replay")).status_code == 202

    body = assert_problem(await api.client.request(method, path.format(dead)), 404)
    assert (
        body["detail"]
        == f"event '{dead}' is not in the DLQ now: it is queued (GET /events/{dead} follows it)"
    )
    assert body["eventStatus"] == "queued"

    await api.burst(succeeding())
    body = assert_problem(await api.client.request(method, path.format(dead)), 404)
    assert body["detail"].startswith(f"event '{dead}' is not in the DLQ now: it is processed")
    assert body["eventStatus"] == "processed"
    assert (await api.client.get(f"/events/{dead}")).json()["status"] == "processed"


async def test_an_unknown_event_is_just_not_found(api: Api) -> None:
    body = assert_problem(await api.client.delete("/failed-events/nope"), 404, "not found")
    assert "eventStatus" not in body
