"""Idempotency keys live in namespaces: each API key has its own unless it shares one
(``--namespace``); anonymous use has its own, with the key names of earlier versions."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from typing import Any

from redis.asyncio import Redis

from eventstream.auth.apikeys import KeyRegistry
from eventstream.broker.keys import Record
from tests.support.asgi import Api, assert_problem
from tests.support.auth import NewKey, bearer
from tests.support.broker import raw_record

ORDER = {"type": "PAYMENT", "payload": {"order": 1042}}


async def post(api: Api, token: str | None, key: str, body: dict[str, Any] = ORDER) -> tuple[int, str]:
    headers = {"Idempotency-Key": key, **(bearer(token) if token else {})}
    r = await api.client.post("/events", json=body, headers=headers)
    assert r.status_code in (200, 202), r.text
    return r.status_code, r.json()["eventId"]


async def test_one_idempotency_key_from_two_api_keys_makes_two_events(api: Api, new_key: NewKey) -> None:
    team_a, team_b = await new_key("ingest", name="team-a"), await new_key("ingest", name="team-b")
    status_a, id_a = await post(api, team_a, "order-1042")
    status_b, id_b = await post(api, team_b, "order-1042")

    assert (status_a, status_b) == (202, 202)
    assert id_a != id_b  # B learns nothing of A's event, and its own is queued
    assert await api.stream_len() == 2
    assert await post(api, team_a, "order-1042") == (200, id_a)
    assert await post(api, team_b, "order-1042") == (200, id_b)
    # a body id is scoped the same way
    body = {**ORDER, "id": "evt-7"}
    r_a = await api.client.post("/events", json=body, headers=bearer(team_a))
    r_b = await api.client.post("/events", json=body, headers=bearer(team_b))
    assert (r_a.status_code, r_b.status_code) == (202, 202)


async def test_keys_created_with_one_namespace_share_their_idempotency_keys(
    api: Api, new_key: NewKey
) -> None:
    registry = KeyRegistry(api.broker)
    old, old_token = await registry.create("shop-2025", "ingest", namespace="shop")
    admin = await new_key("admin")
    r = await api.client.post(
        "/keys", json={"name": "shop-2026", "scope": "ingest", "namespace": "shop"}, headers=bearer(admin)
    )
    assert r.status_code == 201, r.text
    assert r.json()["key"]["namespace"] == "shop"
    new_token = r.json()["token"]
    other = await new_key("ingest", name="other")

    _, first = await post(api, old_token, "order-1")
    assert await post(api, new_token, "order-1") == (200, first)  # a rotation keeps dedupe
    assert (await post(api, other, "order-1"))[0] == 202
    listed = {
        k["name"]: k["namespace"]
        for k in (await api.client.get("/keys", headers=bearer(admin))).json()["items"]
    }
    assert (listed["shop-2025"], listed["shop-2026"], listed["other"]) == ("shop", "shop", None)
    assert old.namespace == "shop"


async def test_a_bad_namespace_is_422(api: Api, new_key: NewKey) -> None:
    admin = await new_key("admin")
    r = await api.client.post(
        "/keys", json={"name": "x", "scope": "ingest", "namespace": "a b:c"}, headers=bearer(admin)
    )
    assert_problem(r, 422, "namespace")


async def test_reuse_with_another_body_under_a_key_is_422(api: Api, new_key: NewKey) -> None:
    token = await new_key("ingest")
    _, first = await post(api, token, "order-9")
    r = await api.client.post(
        "/events",
        json={"type": "PAYMENT", "payload": {"order": 9999}},
        headers={"Idempotency-Key": "order-9", **bearer(token)},
    )
    assert_problem(r, 422, "different event")
    assert await post(api, token, "order-9") == (200, first)
    assert await api.stream_len() == 1


async def test_anonymous_dedupe_records_hash_the_key_as_earlier_versions(redis: Redis, api: Api) -> None:
    """Anonymous keys hash without a namespace key, as before namespaces, so a record an
    earlier version wrote under {p}:idem:<digest> is found (the next test)."""
    _, event_id = await post(api, None, "order-1042")
    digest = hashlib.blake2b(b"order-1042", digest_size=16).hexdigest()
    record = await raw_record(
        redis, Record(f"{{{api.settings.prefix}}}:dedupe:{digest[:3]}", bytes.fromhex(digest[3:27]))
    )
    assert record is not None
    assert (record[6:22], len(record)) == (uuid.UUID(event_id).bytes, 28)  # then the fingerprint


async def test_a_record_written_before_fingerprints_still_makes_a_duplicate(redis: Redis, api: Api) -> None:
    digest = hashlib.blake2b(b"legacy-1", digest_size=16).hexdigest()
    old_id = "01930000-0000-7000-8000-000000000001"
    await redis.set(f"{{{api.settings.prefix}}}:idem:{digest}", old_id, px=60_000)
    assert await post(api, None, "legacy-1") == (200, old_id)
    assert await api.stream_len() == 0


def test_keys_create_namespace_on_the_command_line(api: Api) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
    env.update(EVENTSTREAM_REDIS_URL=api.settings.redis_url or "", EVENTSTREAM_PREFIX=api.settings.prefix)
    done = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "create", "--name", "a", "--scope", "ingest",
         "--namespace", "shop"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "namespace shop" in done.stdout + done.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert [k["namespace"] for k in json.loads(listed.stdout)] == ["shop"]
