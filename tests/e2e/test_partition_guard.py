"""The partition count, guarded across real processes: recorded at the first start; a
process configured with another count refuses to start while the deployment holds
events, and says what to set."""

from __future__ import annotations

import httpx
import pytest

from eventstream.embedded import free_port
from tests.support.processes import Cluster


@pytest.mark.timeout(120)
def test_another_count_is_refused_while_events_are_held(cluster: Cluster) -> None:
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = "4"
    api = cluster.start_api()
    r = httpx.post(f"{api.url}/events", json={"type": "OK", "payload": {}}, timeout=10)
    assert r.status_code == 202, r.text
    cluster.stop(api.proc)

    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = "8"
    worker = cluster.start_worker()
    assert cluster.wait_exit(worker) == 1
    said = " ".join(worker.stderr().split())  # the terminal may wrap it
    assert "has 4 partition(s), recorded in Redis, and EVENTSTREAM_PARTITIONS is 8" in said, said
    assert "set EVENTSTREAM_PARTITIONS=4" in said, said

    port = free_port()
    refused = cluster.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], cluster.env())
    assert cluster.wait_exit(refused) != 0
    assert "set EVENTSTREAM_PARTITIONS=4" in " ".join(refused.logs().split())

    # the recorded count serves
    cluster.settings_env["EVENTSTREAM_PARTITIONS"] = "4"
    again = cluster.start_api()
    assert httpx.get(f"{again.url}/readyz", timeout=10).status_code == 200
