"""The OpenAPI document says what the API does: every operation has a summary written for
it, and the DLQ and replay answers have schemas that the real answers match."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest

from tests.support.asgi import Api, kill

ANSWERS = [  # (method, path, status, schema): each one is requested for real below
    ("get", "/failed-events", 200, "DeadPage"),
    ("get", "/failed-events/{event_id}", 200, "DeadEvent"),
    ("post", "/failed-events/replay", 200, "ReplayPreview"),
    ("post", "/failed-events/replay", 202, "ReplayPage"),
    ("post", "/failed-events/{event_id}/replay", 202, "ReplayedOne"),
    ("post", "/replay", 200, "ReplayPreview"),
    ("post", "/replay", 202, "ReplayPage"),
    ("get", "/metrics/history", 200, "MetricsHistory"),
]


def test_every_operation_has_a_summary_of_its_own(api: Api) -> None:
    """Not FastAPI's stand-in, the handler's name in title case ("Delete Failed")."""
    stand_ins = []
    for path, item in api.app.openapi()["paths"].items():
        for method, op in item.items():
            name = op["operationId"].removesuffix(re.sub(r"\W", "_", path) + f"_{method}")
            if op["summary"] == name.replace("_", " ").title():
                stand_ins.append(f"{method.upper()} {path}: {op['summary']}")
    assert stand_ins == []


def test_the_dlq_and_replay_answers_are_described(api: Api) -> None:
    doc = api.app.openapi()
    for method, path, status, name in ANSWERS:
        content = doc["paths"][path][method]["responses"][str(status)]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert name in doc["components"]["schemas"]
    assert doc["paths"]["/failed-events/{event_id}"]["delete"]["summary"] != "Delete Failed"


@pytest.mark.parametrize(("method", "path", "status", "name"), ANSWERS)
async def test_real_answers_match_their_schemas(
    api: Api, method: str, path: str, status: int, name: str
) -> None:
    [dead] = await kill(api, [("PERM", {"n": 1})])
    await api.accepted("OK", {"n": 2})
    await api.burst(_ok_app())
    query = {"dry_run": "true"} if (method, status) == ("post", 200) else {}
    r = await api.client.request(method, path.format(event_id=dead), params=query)
    assert r.status_code == status, r.text
    doc = api.app.openapi()
    schema: dict[str, Any] = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    errors = [e.message for e in jsonschema_rs.Draft202012Validator(schema).iter_errors(r.json())]
    assert errors == [], r.json()


def _ok_app() -> Any:
    from eventstream.app import EventStream

    app = EventStream()

    @app.handler("*")
    async def ok(event: Any) -> None:
        return None

    return app
