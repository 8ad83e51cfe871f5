"""Network faults between a worker and Redis, through the fault proxy (tests/support/proxy.py):
latency, black hole, connection resets, truncated replies. After each fault heals, the
worker recovers on its own; at the end nothing is lost and nothing completed twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from eventstream.embedded import EmbeddedRedis
from tests.support.http import metrics
from tests.support.outcomes import settle_truth
from tests.support.processes import Cluster
from tests.support.proxy import BLACKHOLE, PASS, RESET, FaultProxy, Mode, latency, truncate
from tests.support.waiting import wait_for

FAULTS: list[Mode] = [latency(300), BLACKHOLE, RESET, truncate(5)]


@pytest.fixture
def proxy(private_redis: EmbeddedRedis) -> Iterator[FaultProxy]:
    p = FaultProxy(private_redis.port).start()
    yield p
    p.close()


class Feeder:
    """Posts a batch of 20 SLOW events every 100 ms (straight to the API, not through the proxy)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=10.0) as c:
            while not self._stop.wait(0.1):
                events = [{"type": "SLOW", "payload": {"ms": 10, "n": n + i}} for i in range(20)]
                n += 20
                r = c.post("/events/batch", json={"events": events})
                if r.status_code == 200:
                    self.accepted += [it["eventId"] for it in r.json()["results"]]
                else:
                    self.failures.append(r.text)


@pytest.mark.timeout(150)
def test_worker_survives_network_faults_to_redis(cluster: Cluster, proxy: FaultProxy) -> None:
    api = cluster.start_api()
    worker = cluster.start_worker(
        concurrency=20, EVENTSTREAM_REDIS_URL=proxy.url, EVENTSTREAM_VISIBILITY_TIMEOUT="2"
    )
    client = httpx.Client(base_url=api.url, timeout=30.0)
    recovery: dict[str, float] = {}
    with Feeder(api.url) as feeder:
        wait_for(lambda: metrics(client)["processed"] >= 100, "the worker to process events", timeout=30)
        for fault in FAULTS:
            proxy.set(fault)
            time.sleep(1.5)  # the fault lasts this long while events keep coming
            at_heal = metrics(client)["processed"]
            proxy.set(PASS)
            healed = time.monotonic()
            wait_for(
                lambda at=at_heal: metrics(client)["processed"] >= at + 50,
                f"the worker to recover from {fault} on its own",
                timeout=30,
            )
            recovery[str(fault)] = round(time.monotonic() - healed, 2)
    assert not feeder.failures, feeder.failures[:3]

    truth = settle_truth(cluster, client, len(feeder.accepted), timeout=60)
    accepted = set(feeder.accepted)
    processed = set(truth.processed)
    assert len(accepted) == len(feeder.accepted)
    assert accepted == processed | truth.dead, "an accepted event was lost, or an unknown one appeared"
    assert not processed & truth.dead
    assert set(truth.processed.values()) == {1}, "completion recorded once per event"
    m = truth.metrics
    assert m["processed"] == len(processed)
    assert m["deadLettered"] == len(truth.dead)
    # a handler runs again only for a redelivered event (its first delivery was lost)
    reruns = sum(c - 1 for c in truth.side_effects.values())
    assert reruns <= m["reclaimed"], (reruns, m)
    assert processed <= set(truth.side_effects), "every processed event's handler ran"
    assert worker.alive(), "the worker was not restarted"
    cluster.stop(worker)
    print(
        f"\nnetwork faults: accepted {len(accepted)}, processed {len(processed)}, dead "
        f"{len(truth.dead)}, handler reruns {reruns}, reclaimed {m['reclaimed']}, rejected "
        f"completions {m['rejectedCompletions']}, redelivered skipped {m['redeliveredSkipped']}; "
        f"recovery after heal (s): {recovery}; proxy: {dict(proxy.stats)}"
    )
    client.close()
