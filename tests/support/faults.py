"""The fault scenarios' processes: the handler app, and the environment every API and
worker process of a scenario shares (a short lease, room for repeated kills, the
idempotent handlers' side table)."""

from __future__ import annotations

from tests.support.processes import Cluster

APP = "tests.support.apps.faults:app"
VT = 1.0  # EVENTSTREAM_VISIBILITY_TIMEOUT of every process here


def fault_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    env = {
        "EVENTSTREAM_VISIBILITY_TIMEOUT": str(VT),
        "EVENTSTREAM_MAX_DELIVERIES": "10",  # repeated kills must not dead-letter an event
        "FAULTS_SIDE_DB": str(cluster.tmp_path / "side.db"),
    }
    env.update(extra)
    return env


def start_api(cluster: Cluster) -> str:
    return cluster.start_api(**fault_env(cluster)).url
