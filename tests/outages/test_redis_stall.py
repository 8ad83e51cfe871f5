"""Redis stalled (CLIENT PAUSE WRITE, SIGSTOP) or its replies delayed: ingest answers 503
with Retry-After within EVENTSTREAM_REDIS_TIMEOUT (+2 s), and a client that retries with
its Idempotency-Key after the stall never gets its event enqueued twice."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
import redis

from eventstream.embedded import EmbeddedRedis
from tests.support.http import metrics, page
from tests.support.outcomes import Post, post_one
from tests.support.processes import Api, Cluster
from tests.support.proxy import PASS, FaultProxy, latency
from tests.support.waiting import wait_for

TIMEOUT_S = 1.0
DEADLINE_S = TIMEOUT_S + 2.0


@pytest.fixture
def proxy(private_redis: EmbeddedRedis) -> Iterator[FaultProxy]:
    p = FaultProxy(private_redis.port).start()
    yield p
    p.close()


def stalled_post(api: Api, key: str) -> Post:
    with httpx.Client(base_url=api.url, timeout=30.0) as c:
        post = post_one(c, "OK", 0, key)
    assert post.status == 503, post
    assert post.retry_after, "a 503 tells the client when to retry"
    assert post.ended - post.started <= DEADLINE_S, f"ingest answered after {post.ended - post.started:.2f}s"
    return post


def retry_until_answered(client: httpx.Client, key: str) -> Post:
    """The client's retry with the same key once the stall is over."""
    return wait_for(
        lambda: (p := post_one(client, "OK", 0, key)).status in (200, 202) and p,
        f"a retry of {key} to be answered",
        timeout=20,
    )


def drained(client: httpx.Client) -> dict[str, int]:
    def probe() -> dict[str, int] | None:
        m = metrics(client)
        live = m["queued"] + m["pending"] + m["scheduled"]
        return m if live == 0 and m["processed"] == m["received"] else None

    return wait_for(probe, "everything to be processed", timeout=30)


@pytest.mark.timeout(120)
def test_stalled_redis_ingest_answers_within_its_deadline_and_never_duplicates(
    cluster: Cluster, private_redis: EmbeddedRedis, proxy: FaultProxy
) -> None:
    assert private_redis.process is not None
    api = cluster.start_api(EVENTSTREAM_REDIS_TIMEOUT=str(TIMEOUT_S))
    worker = cluster.start_worker(concurrency=10)
    # an API whose Redis replies come through the fault proxy; no backpressure check,
    # so the first Redis command of an ingest is the enqueue itself
    proxied = cluster.start_api(
        EVENTSTREAM_REDIS_URL=proxy.url,
        EVENTSTREAM_REDIS_TIMEOUT=str(TIMEOUT_S),
        EVENTSTREAM_MAX_BACKLOG="0",
        EVENTSTREAM_MAX_MEMORY_RATIO="0",
    )
    client = httpx.Client(base_url=api.url, timeout=30.0)
    admin = redis.Redis(port=private_redis.port, decode_responses=True)
    outcomes: dict[str, str] = {}
    try:
        # 1. CLIENT PAUSE WRITE: the enqueue waits for the pause; the API gives up first
        admin.execute_command("CLIENT", "PAUSE", str(int(DEADLINE_S * 1000 + 1000)), "WRITE")
        stalled_post(api, "pause-1")
        admin.execute_command("CLIENT", "UNPAUSE")
        outcomes["pause"] = "duplicate" if retry_until_answered(client, "pause-1").status == 200 else "new"

        # 2. SIGSTOP: nothing answers, not even PING; readiness fails too
        os.kill(private_redis.process.pid, signal.SIGSTOP)
        try:
            stalled_post(api, "stop-1")
            ready = client.get("/readyz")
            assert ready.status_code == 503, ready.text
        finally:
            os.kill(private_redis.process.pid, signal.SIGCONT)
        outcomes["sigstop"] = "duplicate" if retry_until_answered(client, "stop-1").status == 200 else "new"

        # 3. the server applies the enqueue but its reply comes late: the client is told
        # 503, the event is in fact accepted, and the retry must say "duplicate"
        with httpx.Client(base_url=proxied.url, timeout=30.0) as c:
            warm = post_one(c, "OK", 0, "warm-1")  # the script is loaded through the proxy
        assert warm.status == 202, warm
        before = metrics(client)["received"]
        proxy.set(latency(int(DEADLINE_S * 1000)))
        stalled_post(proxied, "late-1")
        wait_for(lambda: metrics(client)["received"] == before + 1, "the late enqueue to be applied")
        proxy.set(PASS)
        again = retry_until_answered(client, "late-1")
        assert again.status == 200, again
        outcomes["late reply"] = "duplicate"
    finally:
        with contextlib.suppress(redis.RedisError):
            admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()

    final = drained(client)
    items = page(client, "/events")
    for key in ("pause-1", "stop-1", "warm-1", "late-1"):
        found = [it for it in items if it["idempotencyKey"] == key]
        assert len(found) == 1, f"{key}: {len(found)} events processed"
    assert final["received"] == final["processed"] == 4
    late = next(it for it in items if it["idempotencyKey"] == "late-1")
    assert late["id"] == again.event_id
    assert len(cluster.side_file.read_text().splitlines()) == 4, "each handler ran once"
    cluster.stop(worker)
    print(f"\nstall outcomes of the timed-out post (the retry found): {outcomes}")
    client.close()
