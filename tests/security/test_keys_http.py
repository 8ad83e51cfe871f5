"""Key management over HTTP (admin scope) and the audit trail of admin actions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from structlog.testing import capture_logs

from eventstream.auth.trail import LOGGER
from tests.api.conftest import Api, assert_problem
from tests.security.conftest import EVENT, NewKey, bearer


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
            "createdAt": None, "lastUsedAt": None, "revoked": False, "revokedAt": None,
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
    assert [(r["action"], r["target"], r["outcome"], r["status"]) for r in records] == [
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


async def test_on_loopback_without_keys_the_first_key_can_be_made_over_http(api: Api) -> None:
    with capture_logs() as logs:
        r = await api.client.post("/keys", json={"name": "first", "scope": "admin"})
    assert r.status_code == 201
    [created] = [x for x in audit_records(logs) if x["action"] == "key.created"]
    assert created["key_id"] == "anonymous"
    # from now on keys are required
    assert (await api.client.get("/keys", headers=bearer(r.json()["token"]))).status_code == 200
