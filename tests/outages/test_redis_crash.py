"""Redis killed with SIGKILL mid-ingest and mid-processing, then restarted on its files."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from eventstream.embedded import EmbeddedRedis
from tests.support.http import get_metrics, metrics
from tests.support.outcomes import Post, Poster, assert_conserved, settle_truth
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


def ok(p: Post) -> bool:
    return p.status is not None and 200 <= p.status < 300


@pytest.mark.timeout(150)
def test_redis_kill_9_and_restart_loses_no_accepted_event(
    cluster: Cluster, private_redis: EmbeddedRedis
) -> None:
    api = cluster.start_api()
    worker = cluster.start_worker(concurrency=20, EVENTSTREAM_VISIBILITY_TIMEOUT="2")
    client = httpx.Client(base_url=api.url, timeout=10.0)
    poster = Poster(api.url).start()
    try:
        wait_for(lambda: sum(map(ok, poster.posts)) >= 100, "100 accepted posts", timeout=30)
        wait_for(lambda: get_metrics(client)["processed"] >= 20, "the worker to process events")

        private_redis.kill()  # SIGKILL; returns once the server is gone
        down_at = time.monotonic()

        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.headers.get("retry-after")

        def down_long_enough() -> bool:
            done = [p for p in poster.since(down_at) if p.ended > 0]
            return time.monotonic() - down_at >= 2.0 and len(done) >= 20

        wait_for(down_long_enough, "2 s of posting while Redis is down", timeout=30)
        assert client.get("/readyz").status_code == 503
        up_begin = time.monotonic()
        private_redis.start()  # same data dir, same port: the append-only files are replayed
        up_at = time.monotonic()

        first_ok = wait_for(
            lambda: next((p for p in poster.since(up_at) if ok(p)), None),
            "the API to accept events again without a restart",
            timeout=30,
        )
        api_recovery_s = first_ok.ended - up_at
        # a request that draws a pooled connection to the dead server answers 503 once
        at_restart = metrics(client)["processed"]
        wait_for(
            lambda: metrics(client)["processed"] > at_restart,
            "the worker to process events again without a restart",
            timeout=30,
        )
        worker_recovery_s = time.monotonic() - up_at
        wait_for(lambda: sum(map(ok, poster.since(up_at))) >= 100, "100 accepted posts after the restart")
    finally:
        posts = poster.stop()

    # while Redis was down: 503 with Retry-After, nothing else (never a 2xx, never a 500)
    during = [p for p in posts if p.started >= down_at and p.ended <= up_begin]
    assert len(during) >= 20
    assert {p.status for p in during} == {503}, Counter(p.status for p in during)
    assert all(p.retry_after for p in during)
    assert all(p.status in (200, 202, 503) for p in posts), Counter(p.status for p in posts)
    assert all(p.retry_after for p in posts if p.status == 503)

    accepted = sum(map(ok, posts))
    truth = settle_truth(cluster, client, accepted, timeout=60)
    # a 503 answered after the kill cannot have been applied: no server was there
    rejected = [p for p in posts if p.status == 503 and p.started >= down_at]
    counts = assert_conserved(posts, truth, rejected_must_not_exist=rejected)
    # the same API and worker processes reconnected on their own; both still stop cleanly
    cluster.stop(worker)
    cluster.stop(api.proc)
    print(
        f"\nredis kill -9: {counts}; 503 while down: {len(during)}; "
        f"API accepted again {api_recovery_s:.2f}s and the worker processed again "
        f"{worker_recovery_s:.2f}s after the restart"
    )
    client.close()
