"""eventstream_ingest_refused_total: the ingest requests this API process answered with
an error, by status, whoever refused them (the guard, the route, a shed)."""

from __future__ import annotations

import re

from eventstream.settings import Settings
from tests.support.asgi import Api
from tests.support.auth import bearer, create_key, running


def refused(text: str) -> dict[str, float]:
    return {
        m[0]: float(m[1])
        for m in re.findall(r'eventstream_ingest_refused_total\{status="(\d+)"\} (\S+)', text)
    }


async def test_each_refused_ingest_request_is_counted_by_status(api: Api) -> None:
    assert refused((await api.client.get("/metrics")).text) == {}
    assert (await api.post("T", {"a": 1})).status_code == 202
    assert (await api.client.post("/events", content=b"{nope")).status_code == 422
    assert (await api.client.post("/events", json={"type": "T", "payload": "x"})).status_code == 422
    big = b'{"type": "T", "payload": {"x": "' + b"a" * (api.settings.max_body_bytes + 1) + b'"}}'
    assert (await api.client.post("/events", content=big)).status_code == 413
    assert (await api.client.post("/events/batch", json={"events": []})).status_code == 422
    assert (await api.client.post("/events?x=1", json={"type": "T", "payload": {}})).status_code == 422
    assert (await api.client.get("/events")).status_code == 200  # not ingest: not counted
    text = (await api.client.get("/metrics")).text
    assert refused(text) == {"413": 1.0, "422": 4.0}
    assert (
        "# TYPE eventstream_ingest_refused_total counter" in text
        or "# TYPE eventstream_ingest_refused counter" in text
    )


async def test_the_guards_refusals_count_too(settings: Settings) -> None:
    async with running(settings) as a:
        token = await create_key(a, "read")
        assert (await a.client.post("/events", json={"type": "T", "payload": {}})).status_code == 401
        r = await a.client.post("/events", json={"type": "T", "payload": {}}, headers=bearer(token))
        assert r.status_code == 403
        text = (await a.client.get("/metrics", headers=bearer(token))).text
        assert refused(text) == {"401": 1.0, "403": 1.0}


async def test_a_shed_while_redis_is_down_is_counted(down_api: Api) -> None:
    r = await down_api.client.post("/events", json={"type": "T", "payload": {}})
    assert r.status_code == 503
    assert down_api.app.state.ingest_refused == {503: 1}
