"""The metrics history from real processes: a worker process samples with no API
running, and the API serves what it sampled."""

from __future__ import annotations

import httpx
import redis

from eventstream.broker.keys import Keys
from eventstream.ops import history
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


def test_a_worker_process_records_the_history_and_the_api_serves_it(cluster: Cluster) -> None:
    key = Keys(cluster.prefix).history
    with redis.Redis.from_url(cluster.redis_url, decode_responses=True) as r:
        worker = cluster.start_worker()
        wait_for(lambda: r.xlen(key) >= 1, "the worker's first sample", timeout=30)
        sample = r.xrange(key)[0][1]  # taken by the worker, the only process
        assert set(sample) == {"t", *history.RATES, *history.GAUGES}
        cluster.stop(worker)  # exits 0: the sampler stopped with it

        api = cluster.start_api()
        with httpx.Client(base_url=api.url, timeout=10.0) as client:
            body = client.get("/metrics/history", params={"window": 120}).json()
        assert body["stepSeconds"] == history.STEP_S
        assert body["points"][0]["t"].endswith("Z")
        assert set(body["points"][0]["gauges"]) == set(history.GAUGES.values())
