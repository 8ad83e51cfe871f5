"""Key management over HTTP (admin scope) and the audit trail of admin actions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from eventstream.auth.apikeys import KeyRegistry, parse_rate
from eventstream.auth.trail import LOGGER
from eventstream.errors import ValidationError
from tests.support.asgi import Api, assert_problem
from tests.support.auth import EVENT, NewKey, bearer


def audit_records(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in logs if r.get("logger") == LOGGER]


async def test_an_admin_creates_lists_and_revokes_keys(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin", name="ops")
    admin_id = admin.split("_")[1]
    with capture_logs() as logs:
        r = await api.client.post(
            "/keys", json={"name": "shop", "scope": "ingest", "rate": 50}, headers=bearer(admin)
        )
        assert r.status_code == 201, r.text
        created = r.json()
        token = created["token"]
        key_id = created["key"]["id"]
        assert token.startswith(f"es_{key_id}_")
        assert created["key"] | {"createdAt": None} == {
            "id": key_id, "name": "shop", "scope": "ingest", "rate": 50.0, "burst": 50,
            "createdAt": None, "lastUsedAt": None, "revoked": False, "revokedAt": None, "namespace": None,
        }  # fmt: skip
        assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 202

        listed = (await api.client.get("/keys", headers=bearer(admin))).json()["items"]
        assert [k["id"] for k in listed] == [admin_id, key_id]
        assert token not in str(listed)

        r = await api.client.delete(f"/keys/{key_id}", headers=bearer(admin))
        assert r.status_code == 200
        assert r.json()["revoked"] is True
        assert (await api.client.post("/events", json=EVENT, headers=bearer(token))).status_code == 401

    records = audit_records(logs)
    actions = [(r["action"], r["target"], r["outcome"]) for r in records]
    assert ("key.created", key_id, "ok") in actions
    assert ("key.revoked", key_id, "ok") in actions
    assert ("http.delete", f"/keys/{key_id}", "ok") in actions
    for rec in records:
        assert rec["key_id"] == admin_id
        assert rec["key_name"] == "ops"
    assert token not in str(logs)
    assert admin not in str(logs)


async def test_replay_and_delete_are_audited_with_the_acting_key(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin", name="ops")
    with capture_logs() as logs:
        await api.client.post("/failed-events/replay", headers=bearer(admin))
        await api.client.delete("/failed-events/nope", headers=bearer(admin))
        await api.client.get("/failed-events", headers=bearer(admin))  # a read: not audited
    records = audit_records(logs)
    [replayed, *requests] = records
    assert (replayed["action"], replayed["target"], replayed["replayed"]) == ("replay.dlq", "all", 0)
    assert [(r["action"], r["target"], r["outcome"], r["status"]) for r in requests] == [
        ("http.post", "/failed-events/replay", "ok", 202),
        ("http.delete", "/failed-events/nope", "failed", 404),
    ]
    assert {r["key_name"] for r in records} == {"ops"}


async def test_a_denied_admin_action_is_audited(api: Api, new_key: NewKey) -> None:
    reader = await new_key("read", name="dash")
    with capture_logs() as logs:
        r = await api.client.delete("/failed-events/x", headers=bearer(reader))
    assert r.status_code == 403
    [record] = audit_records(logs)
    assert record["outcome"] == "denied"
    assert record["key_name"] == "dash"


async def test_an_invalid_new_key_is_422(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin")
    bad: list[dict[str, Any]] = [
        {"name": "x", "scope": "root"},
        {"name": "", "scope": "read"},
        {"scope": "read"},
        {"name": "x", "scope": "read", "rate": -1},
        {"name": "x", "scope": "read", "extra": 1},
    ]
    for body in bad:
        r = await api.client.post("/keys", json=body, headers=bearer(admin))
        assert_problem(r, 422)
    r = await api.client.post("/keys", json={"name": "x", "scope": "read", "burst": 5}, headers=bearer(admin))
    assert_problem(r, 422, "burst")


async def test_revoking_an_unknown_key_is_404(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin")
    for key_id in ("000000000000", "not-an-id", "a}b{c"):
        assert_problem(await api.client.delete(f"/keys/{key_id}", headers=bearer(admin)), 404)


async def test_on_loopback_without_keys_the_first_key_cannot_be_made_over_http(api: Api) -> None:
    with capture_logs() as logs:
        r = await api.client.post("/keys", json={"name": "first", "scope": "admin"})
    assert_problem(r, 403, "eventstream keys create")
    assert not [x for x in audit_records(logs) if x["action"] == "key.created"]
    [refused] = audit_records(logs)  # the refused attempt is in the trail
    assert (refused["action"], refused["target"], refused["outcome"]) == ("http.post", "/keys", "denied")
    assert refused["key_name"] == "anonymous"
    assert await KeyRegistry(api.broker).list() == []


async def test_a_new_key_body_over_4096_bytes_is_413(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin")
    body = json.dumps({"name": "x", "scope": "read", "pad": "x" * 4096})
    assert_problem(await api.client.post("/keys", content=body, headers=bearer(admin)), 413, "4096")
    assert len(await KeyRegistry(api.broker).list()) == 1


@pytest.mark.parametrize("rate", [1e-12, 0.0009, 1_000_001])
async def test_a_rate_out_of_range_is_422(api: Api, new_key: NewKey, rate: float) -> None:
    admin = await new_key("admin")
    r = await api.client.post(
        "/keys", json={"name": "x", "scope": "read", "rate": rate}, headers=bearer(admin)
    )
    assert_problem(r, 422, "rate")
    with pytest.raises(ValidationError, match=r"0\.001"):
        await KeyRegistry(api.broker).create("x", "read", rate)


async def test_an_id_collision_never_overwrites_a_key(api: Api) -> None:
    ids = iter(["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    registry = KeyRegistry(api.broker, new_id=lambda: next(ids))
    first, first_token = await registry.create("first", "read")
    second, second_token = await registry.create("second", "admin")
    assert (first.id, second.id) == ("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    assert (await registry.get(first.id)).scope == "read"
    assert (await api.client.get("/events", headers=bearer(first_token))).status_code == 200
    assert (await api.client.get("/keys", headers=bearer(second_token))).status_code == 200


def test_a_rate_may_be_written_per_second() -> None:
    assert [parse_rate(t) for t in ("200", "200/s", "0.5/s", " 2 / s ", "1e3")] == [200, 200, 0.5, 2, 1000]
    for bad in ("", "/s", "fast", "-1", "2/m", "1/s/s"):
        with pytest.raises(ValidationError, match="events per second"):
            parse_rate(bad)
