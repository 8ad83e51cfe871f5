"""Follow-ups end to end: real API and worker processes, workers killed with SIGKILL
between a parent handler's return and the recording of its completion, 50 times. Every
parent's follow-ups exist exactly once, linked both ways through GET /events/{id}.

The workers reach Redis through a fault proxy that holds every chunk a few
milliseconds, so the steps after a handler returns (staging its follow-ups, the store
row, the completion script) take long enough for a kill to land among them.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.apps.emits import FOLLOW_UPS
from tests.support.cli import run_cli
from tests.support.effects import Effect, side_effects
from tests.support.http import get_metrics, page_all
from tests.support.processes import Cluster, Proc
from tests.support.proxy import FaultProxy, latency
from tests.support.waiting import wait_for

APP = "tests.support.apps.emits:app"
KILLS = 50


@pytest.fixture
def slow_redis(cluster: Cluster) -> Iterator[FaultProxy]:
    url = urlsplit(cluster.redis_url)
    proxy = FaultProxy(url.port or 6379, url.hostname or "127.0.0.1").start()
    proxy.set(latency(15))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.timeout(300)
def test_follow_ups_exist_exactly_once_when_workers_die_after_the_handler_returns(
    cluster: Cluster, slow_redis: FaultProxy
) -> None:
    cluster.settings_env.update(
        {
            "EVENTSTREAM_PARTITIONS": "4",
            "EVENTSTREAM_VISIBILITY_TIMEOUT": "1",
            "EVENTSTREAM_MAX_DELIVERIES": "1000",  # killed again and again, never dead for it
        }
    )
    api = cluster.start_api()
    http = httpx.Client(base_url=api.url, timeout=30)
    rng = random.Random(15)

    def start() -> Proc:
        return cluster.start_worker(APP, EVENTSTREAM_REDIS_URL=slow_redis.url)

    workers = [start(), start()]
    parents: list[str] = []
    for n in range(KILLS):
        r = http.post("/events", json={"type": "PARENT", "payload": {"n": n}})
        assert r.status_code == 202, r.text
        parent = r.json()["eventId"]
        parents.append(parent)
        returned = wait_for(
            lambda parent=parent: first_return(cluster, parent),
            f"parent {n} to return",
            timeout=60,
            interval=0.002,
        )
        time.sleep(rng.uniform(0, 0.4))  # before, among or after staging, the store row, the completion
        victim = next((w for w in workers if w.pid == returned.pid), None)
        if victim is None:  # run by a worker already replaced: nothing to kill this time
            continue
        cluster.kill9(victim)
        workers.remove(victim)
        workers.append(start())

    total = KILLS * (1 + FOLLOW_UPS)
    wait_for(
        lambda: (m := get_metrics(http))["processed"] == total and m["received"] == total,
        f"{total} events to be processed",
        timeout=120,
        last=lambda: get_metrics(http),
    )

    # every parent once in the store, its children named, each child once, naming it
    for parent in parents:
        item = http.get(f"/events/{parent}").json()
        assert item["status"] == "processed"
        assert len(item["children"]) == FOLLOW_UPS, item
        for child in item["children"]:
            got = http.get(f"/events/{child}").json()
            assert (got["status"], got["causationId"]) == ("processed", parent), got
    stored = Counter(it["id"] for it in page_all(http, "/events"))
    assert len(stored) == total
    assert set(stored.values()) == {1}
    metrics = get_metrics(http)
    assert (metrics["emitted"], metrics["dlq"], metrics["outbox"]) == (KILLS * FOLLOW_UPS, 0, 0)
    ran = Counter(e.event_id for e in side_effects(cluster.side_file) if e.kind == "CHILD")
    assert len(ran) == KILLS * FOLLOW_UPS

    # the kills landed among the steps after the return, not only after the completion
    returns = Counter(e.event_id for e in side_effects(cluster.side_file) if e.kind == "RETURNED")
    ran_again = sum(1 for p in parents if returns[p] > 1)  # killed before the store row
    skipped = sum(len(p.log_events("redelivered but already processed: acknowledged without running"))
                  for p in cluster.procs if p.name.startswith("worker"))  # fmt: skip
    print(f"kills: {KILLS}; parents run again: {ran_again}; completed from the staged follow-ups: {skipped}")
    assert skipped >= 1, "no kill landed between the store row and the completion"
    assert ran_again + skipped >= 1

    run = run_cli("audit", "--json", env=cluster.env())
    assert run.code == 0, run.stderr
    audit = json.loads(run.stdout)
    assert audit["ok"] is True, audit["problems"]
    assert (audit["received"], audit["processed"]) == (total, total)
    for w in workers:
        cluster.stop(w)
    cluster.stop(api.proc)
    http.close()


def first_return(cluster: Cluster, parent: str) -> Effect | None:
    return next(
        (e for e in side_effects(cluster.side_file) if e.kind == "RETURNED" and e.event_id == parent), None
    )
