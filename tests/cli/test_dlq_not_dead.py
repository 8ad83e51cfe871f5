"""`eventstream dlq delete|replay|show` of a replayed event that is not dead again yet says
where the event is (the API's answer), against a real API process."""

from __future__ import annotations

import httpx
import pytest

from tests.support.cli import run_cli
from tests.support.processes import Api, Cluster


@pytest.mark.parametrize("command", ["delete", "replay", "show"])
def test_a_replayed_event_is_said_to_be_queued(
    cluster: Cluster, api: Api, client: httpx.Client, command: str
) -> None:
    r = client.post("/events", json={"type": "PERM", "payload": {}})
    dead = r.json()["eventId"]
    assert cluster.wait_exit(cluster.start_worker(burst=True)) == 0
    assert client.get(f"/events/{dead}").json()["status"] == "dead"
    assert client.post(f"/failed-events/{dead}/replay").status_code == 202  # no worker: it stays queued

    done = run_cli("dlq", command, dead, url=api.url)
    assert done.code == 1, done.stderr
    said = " ".join(done.stderr.split())
    assert f"event '{dead}' is not in the DLQ now: it is queued (GET /events/{dead} follows it)" in said
    assert done.stdout == ""
