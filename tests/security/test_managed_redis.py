"""A managed Redis: TLS (rediss://, a private CA, mutual TLS) and an ACL user, against real
private servers (tests/support/tls.py makes the certificates and the TLS server).

Each setting goes through open_broker, the one way every process opens Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from eventstream.backends import open_backends, open_broker
from eventstream.errors import BackendError, ConfigError, RedisUnavailable
from eventstream.event import Event
from tests.support.broker import put
from tests.support.factories import make_settings, recording_app
from tests.support.processes import Cluster
from tests.support.tls import Pki, TlsRedis, make_pki, start_tls_redis
from tests.support.workers import burst


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = start_tls_redis(tmp_path_factory.mktemp("tls-redis"), pki)
    yield server
    server.server.stop()


# ---- TLS -------------------------------------------------------------------------------


async def test_rediss_with_the_ca_file_carries_an_event_through(
    tls_redis: TlsRedis, pki: Pki, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(tls_redis.url, prefix, tmp_path, redis_tls_ca_file=pki.ca)
    seen: list[Event] = []
    async with open_backends(settings) as b:
        await b.broker.ensure_group()
        event_id = await put(b.broker, "TLS", {"secure": True})
        await burst(recording_app(seen), settings, b.broker, b.store)
        assert [(e.id, e.type, e.payload) for e in seen] == [(event_id, "TLS", {"secure": True})]
        assert await b.store.get(event_id) is not None


async def test_without_the_ca_file_the_certificate_is_refused(
    tls_redis: TlsRedis, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(tls_redis.url, prefix, tmp_path)  # the system's CAs do not know ours
    async with open_broker(settings) as broker:
        with pytest.raises(RedisUnavailable, match="certificate verify failed"):
            await broker.ping()


async def test_a_host_name_the_certificate_does_not_name_is_refused(
    tls_redis: TlsRedis, pki: Pki, prefix: str, tmp_path: Path
) -> None:
    url = f"rediss://localhost:{tls_redis.tls_port}/0"  # the certificate names 127.0.0.1 only
    settings = make_settings(url, prefix, tmp_path, redis_tls_ca_file=pki.ca)
    async with open_broker(settings) as broker:
        with pytest.raises(RedisUnavailable, match="certificate verify failed"):
            await broker.ping()


async def test_a_plain_url_with_a_ca_file_is_a_configuration_error(
    tls_redis: TlsRedis, pki: Pki, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(None, prefix, tmp_path, redis_tls_ca_file=pki.ca)  # type: ignore[arg-type]
    plain = f"redis://127.0.0.1:{tls_redis.server.port}/0"
    with pytest.raises(
        ConfigError, match=r"EVENTSTREAM_REDIS_TLS_CA_FILE set, but the Redis URL is not rediss"
    ):
        async with open_broker(settings, plain):
            pass


async def test_mutual_tls_sends_the_client_certificate(pki: Pki, prefix: str, tmp_path: Path) -> None:
    server = start_tls_redis(tmp_path / "mtls", pki, auth_clients="yes")
    try:
        without = make_settings(server.url, prefix, tmp_path, redis_tls_ca_file=pki.ca)
        async with open_broker(without) as broker:
            with pytest.raises(RedisUnavailable):
                await broker.ping()
        with_cert: dict[str, Any] = {
            "redis_tls_ca_file": pki.ca,
            "redis_tls_cert_file": pki.client_cert,
            "redis_tls_key_file": pki.client_key,
        }
        async with open_broker(make_settings(server.url, prefix, tmp_path, **with_cert)) as broker:
            await broker.ping()
            assert await broker.is_idle()
    finally:
        server.server.stop()


def test_a_worker_process_runs_on_rediss(tls_redis: TlsRedis, pki: Pki, prefix: str, tmp_path: Path) -> None:
    cluster = Cluster(tls_redis.url, prefix, tmp_path)
    try:
        tls = {"EVENTSTREAM_REDIS_TLS_CA_FILE": str(pki.ca)}
        api = cluster.start_api(**tls)
        reply = httpx.post(f"{api.url}/events", json={"type": "TLS", "payload": {"n": 1}}, timeout=10)
        assert reply.status_code == 202, reply.text
        worker = cluster.start_worker(None, burst=True, **tls)  # the default app: every type
        assert cluster.wait_exit(worker) == 0, worker.logs()
        event_id = reply.json()["eventId"]
        got = httpx.get(f"{api.url}/events/{event_id}", timeout=10)
        assert got.json()["status"] == "processed", got.text
        cluster.stop(api.proc)
    finally:
        cluster.cleanup()


# ---- an ACL user ------------------------------------------------------------------------


@pytest.fixture
async def acl_user(redis: Redis, prefix: str) -> AsyncIterator[tuple[str, str]]:
    """A user of the session's server that may use this test's keys only (``{prefix}:...``)."""
    name, password = f"app-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    await redis.execute_command("ACL", "SETUSER", name, "on", f">{password}", f"~{{{prefix}}}*", "+@all")
    yield name, password
    await redis.execute_command("ACL", "DELUSER", name)


async def test_the_acl_user_and_password_settings_authenticate(
    acl_user: tuple[str, str], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    name, password = acl_user
    settings = make_settings(redis_url, prefix, tmp_path, redis_username=name, redis_password=password)
    async with open_broker(settings) as broker:
        await broker.ensure_group()
        event_id = await put(broker, "ACL")
        assert (await broker.locate(event_id)) is not None
    assert password not in repr(settings)
    assert password not in str(settings.model_dump())


async def test_a_wrong_password_is_an_error_not_an_outage(
    acl_user: tuple[str, str], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    name, _ = acl_user
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = make_settings(redis_url, prefix, tmp_path, redis_username=name, redis_password=wrong)
    with pytest.raises(BackendError) as caught:  # at connect: it asks the server its mode
        async with open_broker(settings) as broker:
            await broker.ping()
    assert not isinstance(caught.value, RedisUnavailable)  # a worker would retry that forever
    assert "AuthenticationError" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_worker_with_a_wrong_password_stops_and_says_why(
    cluster: Cluster, acl_user: tuple[str, str]
) -> None:
    name, _ = acl_user
    wrong = f"wrong-{uuid.uuid4().hex}"
    worker = cluster.start_worker(EVENTSTREAM_REDIS_USERNAME=name, EVENTSTREAM_REDIS_PASSWORD=wrong)
    assert cluster.wait_exit(worker, timeout=30) == 1
    logs = worker.logs()
    assert "AuthenticationError" in logs
    assert "Traceback" not in logs
    assert wrong not in logs
