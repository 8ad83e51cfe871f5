"""compose.yaml's worker health check, run for real: healthy while a worker on this host
beats its heart in Redis, unhealthy before it starts and after it stops."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from tests.support.paths import COMPOSE
from tests.support.processes import Cluster
from tests.support.waiting import wait_for


def _check_script() -> str:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    script: str = test[3]
    return script


def _healthy(cluster: Cluster) -> bool:
    done = subprocess.run(
        [sys.executable, "-c", _check_script()],
        env=cluster.env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def test_the_worker_health_check_follows_the_heartbeat(cluster: Cluster) -> None:
    assert not _healthy(cluster)  # no worker yet
    worker = cluster.start_worker()
    wait_for(lambda: _healthy(cluster), "the health check to see the worker's heartbeat", 30, 0.2)
    cluster.stop(worker)  # a clean stop removes the heartbeat
    assert not _healthy(cluster)
