"""EVENTSTREAM_REDIS_WAIT_REPLICAS / _WAIT_AOF: ingest answers 2xx only once the replicas
(or AOF fsyncs) asked for confirmed the write; otherwise 503 with the event id, the event
still queued, and a retry with the same key a duplicate. Real servers: a primary and its
replica, paused with SIGSTOP to stop confirming."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eventstream.embedded import EmbeddedRedis
from eventstream.settings import Settings
from tests.support.asgi import assert_problem, running
from tests.support.factories import make_settings
from tests.support.servers import missing, paused, start_private_redis
from tests.support.waiting import wait_for

EVENT = {"type": "ORDER", "payload": {"n": 1}}


def _info(node: EmbeddedRedis, section: str) -> dict[str, Any]:
    with redis.Redis(port=node.port, decode_responses=True) as r:
        return dict(r.info(section))


@pytest.fixture(scope="module")
def primary_and_replica(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    primary = start_private_redis(tmp_path_factory.mktemp("primary"))
    replica = EmbeddedRedis(
        tmp_path_factory.mktemp("replica"),
        fsync="always",
        extra_args=["--replicaof", "127.0.0.1", str(primary.port), "--enable-debug-command", "local"],
    ).start()
    try:
        wait_for(
            lambda: _info(replica, "replication").get("master_link_status") == "up", "the replica's link"
        )
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
def durable(primary_and_replica: Any, prefix: str, tmp_path: Path) -> Settings:
    primary, _ = primary_and_replica
    return make_settings(primary.url, prefix, tmp_path, redis_wait_replicas=1, redis_wait_timeout=0.3)


async def test_a_confirmed_write_is_accepted(durable: Settings) -> None:
    async with running(durable) as api:
        r = await api.client.post("/events", json=EVENT)
        assert r.status_code == 202, r.text
        batch = await api.client.post("/events/batch", json={"events": [EVENT, EVENT]})
        assert batch.status_code == 200, batch.text
        assert batch.json()["accepted"] == 2


async def test_an_unconfirmed_write_is_503_with_its_id_and_stays_queued(
    durable: Settings, primary_and_replica: Any
) -> None:
    _, replica = primary_and_replica
    async with running(durable) as api:
        with paused(replica):
            r = await api.client.post("/events", json=EVENT, headers={"Idempotency-Key": "order-1"})
            body = assert_problem(r, 503, "only 0 of 1 replica(s) confirmed", "same Idempotency-Key")
            assert r.headers["retry-after"] == "1"
            assert body["duplicate"] is False
            event_id = body["eventId"]
            # queued all the same: GET /events/{id} finds it
            got = await api.client.get(f"/events/{event_id}")
            assert got.status_code == 200, got.text
            assert got.json()["status"] == "queued"

            batch = await api.client.post(
                "/events/batch",
                json={"events": [EVENT, {"type": "bad type"}]},
                headers={"Idempotency-Key": "b"},
            )
            body = assert_problem(batch, 503, "only 0 of 1 replica(s) confirmed")
            assert body["accepted"] == 1
            assert [item["status"] for item in body["results"]] == [202, 422]
            first = body["results"][0]["eventId"]

        # the replica is back: a retry with the same keys is a duplicate, confirmed
        wait_for(lambda: _info(replica, "replication").get("master_link_status") == "up", "the link")
        again = await api.client.post("/events", json=EVENT, headers={"Idempotency-Key": "order-1"})
        assert again.status_code == 200, again.text
        assert again.json() == {"message": again.json()["message"], "eventId": event_id, "duplicate": True}
        batch = await api.client.post(
            "/events/batch", json={"events": [EVENT, {"type": "bad type"}]}, headers={"Idempotency-Key": "b"}
        )
        assert batch.status_code == 200, batch.text
        assert batch.json()["results"][0] == {"index": 0, "status": 200, "eventId": first, "duplicate": True}
        metrics = (await api.client.get("/metrics", headers={"Accept": "application/json"})).json()
        assert (metrics["received"], metrics["duplicates"]) == (2, 2)


def test_the_wait_must_end_before_a_reply_is_given_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EVENTSTREAM_REDIS_WAIT_TIMEOUT"):
        make_settings("redis://127.0.0.1:1", "p", tmp_path, redis_wait_replicas=1, redis_wait_timeout=5)


async def test_waiting_for_the_aof(primary_and_replica: Any, prefix: str, tmp_path: Path) -> None:
    """WAITAOF 1 1: the primary's and the replica's fsyncs (appendonly yes on both). A
    replica's first fsync report after its initial sync may take a while: 2 s allowed."""
    primary, replica = primary_and_replica
    settings = make_settings(
        primary.url, prefix, tmp_path, redis_wait_replicas=1, redis_wait_aof=True, redis_wait_timeout=2
    )
    async with running(settings) as api:
        r = await api.client.post("/events", json=EVENT)
        assert r.status_code == 202, r.text
        with paused(replica):
            r = await api.client.post("/events", json=EVENT)
            assert_problem(r, 503, "only 0 of 1 replica AOF fsync(s) confirmed")


async def test_a_server_without_waitaof_is_a_clear_503(prefix: str, tmp_path: Path) -> None:
    """Redis 7.0 has no WAITAOF: the event is queued, and the answer says why it is not confirmed."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("no redis-server on PATH (Debian's redis-server package is Redis 7.0, without WAITAOF)")
    old = EmbeddedRedis(tmp_path / "redis7")
    old.binary = str(binary)
    old.start()
    try:
        if "valkey_version" in _info(old, "server") or _info(old, "server")["redis_version"] >= "7.2":
            pytest.skip("this redis-server has WAITAOF")
        settings = make_settings(old.url, prefix, tmp_path, redis_wait_aof=True)
        async with running(settings) as api:
            r = await api.client.post("/events", json=EVENT)
            body = assert_problem(r, 503, "no WAITAOF", "EVENTSTREAM_REDIS_WAIT_AOF")
            got = await api.client.get(f"/events/{body['eventId']}")
            assert got.json()["status"] == "queued"
    finally:
        old.stop()


async def test_waitaof_without_an_append_only_file_is_a_clear_503(prefix: str, tmp_path: Path) -> None:
    """Valkey refuses WAITAOF when appendonly is off (as on services without an AOF)."""
    server = EmbeddedRedis(tmp_path / "no-aof", extra_args=["--appendonly", "no"]).start()
    try:
        settings = make_settings(server.url, prefix, tmp_path, redis_wait_aof=True)
        async with running(settings) as api:
            r = await api.client.post("/events", json=EVENT)
            if "no WAITAOF" in r.text:  # a server too old for WAITAOF: that answer instead
                body = assert_problem(r, 503, "no WAITAOF", "EVENTSTREAM_REDIS_WAIT_AOF")
            else:
                words = ("Redis refused to confirm it", "appendonly", "EVENTSTREAM_REDIS_WAIT_AOF")
                body = assert_problem(r, 503, *words)
            got = await api.client.get(f"/events/{body['eventId']}")
            assert got.json()["status"] == "queued"
    finally:
        server.stop()
