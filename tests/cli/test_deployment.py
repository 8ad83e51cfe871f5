"""How commands find their deployment: beside a running ``eventstream up``, from any
directory, by ``--data-dir DIR`` or ``EVENTSTREAM_DATA_DIR``, the same for every command
that works on Redis and the store directly (audit, keys, db)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eventstream.embedded import free_port
from tests.support.processes import Cluster, start_up

COMMANDS = [
    ["audit", "--json"],
    ["keys", "list", "--json"],
]


def run(cluster: Cluster, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = cluster.env(redis=False, COLUMNS="200", **env)
    if "EVENTSTREAM_DATA_DIR" not in env:
        del environment["EVENTSTREAM_DATA_DIR"]
    return subprocess.run(
        [sys.executable, "-m", "eventstream", *args],
        env=environment, cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_commands_beside_up_find_it_by_data_dir_from_anywhere(cluster: Cluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "deployment"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    up, client = start_up(cluster, data_dir)
    client.close()
    for args in COMMANDS:
        by_option = run(cluster, elsewhere, *args, "--data-dir", str(data_dir))
        assert by_option.returncode == 0, (args, by_option.stderr)
        by_env = run(cluster, elsewhere, *args, EVENTSTREAM_DATA_DIR=str(data_dir))
        assert by_env.returncode == 0, (args, by_env.stderr)
        assert by_env.stdout.split(",")[2:] == by_option.stdout.split(",")[2:]  # not the time ("at")
        missing = run(cluster, elsewhere, *args)
        assert missing.returncode == 2, (args, missing.stdout)
        said = " ".join(missing.stderr.split())
        assert "--data-dir" in said, said
        assert "EVENTSTREAM_DATA_DIR" in said, said
        assert str((elsewhere / "data").resolve()) in said, "it says where it looked"
    assert (
        json.loads(run(cluster, elsewhere, "keys", "list", "--json", "--data-dir", str(data_dir)).stdout)
        == []
    )
    db = run(cluster, elsewhere, "db", "check", "--data-dir", str(data_dir))
    assert db.returncode == 0, db.stderr
    assert "up to date" in db.stdout
    # a worker and a second API join it the same way
    worker = run(cluster, elsewhere, "worker", "--burst", "--data-dir", str(data_dir))
    assert worker.returncode == 0, worker.stderr
    port = free_port()
    environment = cluster.env(redis=False)
    del environment["EVENTSTREAM_DATA_DIR"]
    api = cluster.spawn("api", ["api", "--port", str(port), "--data-dir", str(data_dir)], environment)
    cluster.wait_ready(api, port)
    assert cluster.stop(api) == 0
    missing = run(cluster, elsewhere, "worker", "--burst")
    assert missing.returncode == 2
    assert "--data-dir" in missing.stderr
    assert not (elsewhere / "data").exists(), "nothing was made where the command was run"
    up.popen.send_signal(signal.SIGINT)
    assert cluster.wait_exit(up, timeout=40) == 0, up.logs()


def test_audit_help_tells_the_same_story() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventstream", "audit", "--help"], capture_output=True, text=True, check=True
    )
    text = " ".join(done.stdout.split())
    assert "Needs EVENTSTREAM_REDIS_URL" not in text
    assert "--data-dir" in text
    assert "eventstream up" in text
