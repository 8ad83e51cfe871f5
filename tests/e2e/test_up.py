"""``eventstream up`` with its embedded server: Ctrl-C stops everything; a restart finds it all."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstream.embedded import free_port
from tests.support.effects import count_side_effects
from tests.support.http import get_metrics
from tests.support.processes import E2E_APP, Cluster, Proc, start_up
from tests.support.waiting import wait_for

PIPELINES = {
    # Ctrl-C also kills tee: `up` and its children then write to a pipe with no reader
    "through a pipe": "{up} 2>&1 | tee {log}",
    "into a full disk": "exec {up} >/dev/full 2>&1",  # every write fails (ENOSPC)
}


def status(client: httpx.Client, event_id: str) -> str:
    r = client.get(f"/events/{event_id}")
    assert r.status_code == 200, r.text
    value: str = r.json()["status"]
    return value


def wait_status(client: httpx.Client, event_id: str, wanted: str) -> None:
    wait_for(lambda: status(client, event_id) == wanted, f"{event_id} to be {wanted}", timeout=30,
             last=lambda: status(client, event_id))  # fmt: skip


def post(client: httpx.Client, events: list[dict[str, Any]]) -> list[str]:
    r = client.post("/events/batch", json={"events": events})
    assert r.status_code == 200, r.text
    return [item["eventId"] for item in r.json()["results"]]


def assert_all_gone(cluster: Cluster, up: Proc, port: int) -> None:
    """No process of this test is left (api, workers, the embedded server), the port is free."""
    leftovers = cluster.marked_pids()
    assert not leftovers, f"processes left after `up` stopped: {leftovers}\n{up.logs()}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)


@pytest.mark.timeout(120)
def test_up_ctrl_c_and_restart_on_the_same_data_dir(cluster: Cluster, tmp_path: Path) -> None:
    data_dir = tmp_path / "updata"
    gate = tmp_path / "gate-open"
    settings = {"EVENTSTREAM_CONCURRENCY": "2", "EVENTSTREAM_SHUTDOWN_GRACE": "4"}

    # ---- first run ---------------------------------------------------------------------
    up, client = start_up(cluster, data_dir, **settings)
    with client:
        port = client.base_url.port
        assert port is not None
        done = post(client, [{"type": "OK", "payload": {"n": i}} for i in range(5)])
        for event_id in done:
            wait_status(client, event_id, "processed")
        # Fill both handler slots: GATE blocks until the gate file exists (it will not,
        # in this run); SLOW is still running when Ctrl-C comes and must finish then.
        [blocked] = post(client, [{"type": "GATE", "payload": {"gate": str(gate)}}])
        wait_status(client, blocked, "processing")
        [slow] = post(client, [{"type": "SLOW", "payload": {"ms": 2000}}])
        wait_status(client, slow, "processing")
        # Both slots are taken: these stay queued.
        queued = post(client, [{"type": "OK", "payload": {"queued": i}} for i in range(3)])
        for event_id in queued:
            assert status(client, event_id) == "queued"
        assert get_metrics(client)["received"] == 10

    # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    os.killpg(up.pid, signal.SIGINT)
    assert cluster.wait_exit(up, timeout=40) == 0, up.logs()
    assert_all_gone(cluster, up, port)
    assert "stopped" in up.stderr()
    # the server it started, named with its allocator
    said = up.stdout() + up.stderr()
    assert re.search(r"embedded Redis \((redis|valkey) [\d.]+, [^)]*\) on redis://", said), said
    ran = count_side_effects(cluster.side_file, "OK")
    assert set(ran) == set(done), "the queued events were not run before the stop"
    assert count_side_effects(cluster.side_file, "SLOW") == {slow: 1}, "the in-flight SLOW finished"
    assert count_side_effects(cluster.side_file, "GATE_START") == {blocked: 1}
    assert (data_dir / "events.db").exists()
    assert (data_dir / "redis").is_dir()

    # ---- second run, same data dir -----------------------------------------------------
    up, client = start_up(cluster, data_dir, **settings, EVENTSTREAM_VISIBILITY_TIMEOUT="1")
    with client:
        port = client.base_url.port
        assert port is not None
        for event_id in done:
            r = client.get(f"/events/{event_id}")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "processed", r.text
        assert status(client, slow) == "processed", "the outcome recorded at Ctrl-C survived"
        assert status(client, blocked) in {"queued", "processing"}
        for event_id in queued:
            assert status(client, event_id) in {"queued", "processing", "processed"}

        gate.touch()
        for event_id in [blocked, *queued]:
            wait_status(client, event_id, "processed")
        m = get_metrics(client)
        assert m["received"] == 10, "the counters survived the restart"
        assert m["processed"] == 10
        assert m["reclaimed"] == 1, "only the GATE handler cancelled at Ctrl-C is run again"
        assert m["redeliveredSkipped"] == 0
        assert m["queued"] == m["pending"] == m["scheduled"] == m["dlq"] == 0

    ok = count_side_effects(cluster.side_file, "OK")
    assert ok == Counter([*done, *queued]), "each OK handler ran exactly once"
    assert count_side_effects(cluster.side_file, "SLOW") == {slow: 1}
    assert count_side_effects(cluster.side_file, "GATE") == {blocked: 1}

    # This time SIGINT to `up` alone (kill -INT <pid>): it stops its children itself.
    up.popen.send_signal(signal.SIGINT)
    assert cluster.wait_exit(up, timeout=40) == 0, up.logs()
    assert_all_gone(cluster, up, port)


def spawn_shell(cluster: Cluster, name: str, command: str, env: dict[str, str]) -> Proc:
    """``/bin/sh -c COMMAND`` in a process group of its own, as a terminal runs a pipeline."""
    out_path, err_path = cluster.logs_dir / f"{name}.stdout", cluster.logs_dir / f"{name}.stderr"
    out, err = out_path.open("wb"), err_path.open("wb")
    args = ["/bin/sh", "-c", command]
    popen = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cluster.tmp_path,
        start_new_session=True,
    )  # fmt: skip
    proc = Proc(name, args, popen, out_path, err_path, [out, err])
    cluster.procs.append(proc)
    return proc


@pytest.mark.timeout(180)
@pytest.mark.parametrize("output", list(PIPELINES))
def test_ctrl_c_stops_everything_whatever_happened_to_the_output(
    cluster: Cluster, tmp_path: Path, output: str
) -> None:
    data_dir = tmp_path / "updata"
    env = cluster.env(redis=False, EVENTSTREAM_SHUTDOWN_GRACE="2", EVENTSTREAM_LOG_FORMAT="console")
    del env["EVENTSTREAM_DATA_DIR"]
    port = free_port()
    up = f"{shlex.quote(sys.executable)} -m eventstream up {E2E_APP} --port {port} --data-dir {data_dir}"
    shell = spawn_shell(cluster, "pipeline", PIPELINES[output].format(up=up, log=tmp_path / "up.log"), env)
    cluster.wait_ready(shell, port, timeout=60)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
        [done] = post(client, [{"type": "OK", "payload": {}}])
        wait_status(client, done, "processed")

    # Ctrl-C in the terminal: SIGINT to the pipeline's whole process group.
    os.killpg(shell.pid, signal.SIGINT)
    wait_for(
        lambda: not cluster.marked_pids(), "every process of the pipeline to stop", timeout=90,
        last=cluster.marked_pids,
    )  # fmt: skip
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)

    # A second start on the same data dir finds it free, and the event where it was.
    again, client = start_up(cluster, data_dir)
    with client:
        assert status(client, done) == "processed"
    again.popen.send_signal(signal.SIGINT)
    assert cluster.wait_exit(again, timeout=40) == 0, again.logs()


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_taken_port_is_refused_before_anything_starts(
    cluster: Cluster, tmp_path: Path, command: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = cluster.env(redis=command == "api")
        proc = cluster.spawn(command, [command, "--port", str(port)], env)
        assert cluster.wait_exit(proc) == 2, proc.logs()
    err = " ".join(proc.stderr().split())
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "--port" in err
    assert "API on" not in err, "nothing is started on a taken port"
    assert "embedded Redis" not in err
    assert not (cluster.data_dir / "redis").exists()
    assert not cluster.marked_pids()


@pytest.mark.timeout(120)
def test_a_second_ctrl_c_stops_handlers_still_running(cluster: Cluster, tmp_path: Path) -> None:
    # a grace far longer than the test's timeout: only the second Ctrl-C can end it in time
    up, client = start_up(cluster, tmp_path / "updata", EVENTSTREAM_SHUTDOWN_GRACE="600")
    with client:
        [blocked] = post(client, [{"type": "GATE", "payload": {"gate": str(tmp_path / "never")}}])
        wait_status(client, blocked, "processing")
    os.killpg(up.pid, signal.SIGINT)
    wait_for(lambda: "Ctrl-C again" in up.stderr(), "up to say it waits for the running handler")
    assert up.alive(), "the handler still runs: up waits for it"
    os.killpg(up.pid, signal.SIGINT)
    assert cluster.wait_exit(up, timeout=60) == 0, up.logs()
    assert "a second stop signal" in up.stderr()
    wait_for(lambda: not cluster.marked_pids(), "every process to be gone", last=cluster.marked_pids)
