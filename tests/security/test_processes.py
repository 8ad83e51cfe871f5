"""Real ``eventstream`` processes: the loopback rule, --insecure, the start message, and
the `keys` commands with their audit trail, against the session's private Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from eventstream.embedded import free_port
from tests.support.processes import Cluster, Proc
from tests.support.waiting import wait_for

EVENT = {"type": "T", "payload": {}}


def run_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventstream", *args],
        env=cluster.env(),
        cwd=cluster.tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_api(cluster: Cluster, host: str, *flags: str) -> tuple[Proc, int]:
    port = free_port()
    proc = cluster.spawn("api", ["api", "--host", host, "--port", str(port), *flags], cluster.env())
    return proc, port


def audit_lines(stderr: str) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and '"eventstream.audit_trail"' in line
    ]


def test_a_public_address_without_keys_is_refused(cluster: Cluster) -> None:
    proc, _ = start_api(cluster, "0.0.0.0")
    assert cluster.wait_exit(proc) == 2
    assert "refusing to listen on 0.0.0.0" in proc.stderr()
    assert "--insecure" in proc.stderr()


def test_up_on_a_public_address_without_keys_refuses_before_starting_anything(cluster: Cluster) -> None:
    done = run_cli(cluster, "up", "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "API on" not in done.stderr + done.stdout  # no API or worker was started
    assert "worker started" not in done.stderr


def test_insecure_starts_on_a_public_address_and_says_so(cluster: Cluster) -> None:
    proc, port = start_api(cluster, "0.0.0.0", "--insecure")
    cluster.wait_ready(proc, port)
    assert "--insecure" in proc.stderr()
    assert proc.log_events(
        "no API keys exist and --insecure is set: anonymous requests are accepted from any address; "
        "create one with `eventstream keys create` to require keys"
    )
    r = httpx.post(f"http://127.0.0.1:{port}/events", json=EVENT, timeout=10)
    assert r.status_code == 202
    assert cluster.stop(proc) == 0


def test_on_loopback_the_start_message_says_anonymous_requests_are_accepted(cluster: Cluster) -> None:
    proc, port = start_api(cluster, "127.0.0.1")
    cluster.wait_ready(proc, port)
    [record] = proc.log_events(
        "no API keys exist: anonymous requests are accepted because the API listens on loopback "
        "only; create one with `eventstream keys create` to require keys"
    )
    assert record["level"] == "warning"
    assert cluster.stop(proc) == 0


def test_keys_made_with_the_cli_protect_a_public_api(cluster: Cluster) -> None:
    made = run_cli(cluster, "keys", "create", "--name", "shop", "--scope", "ingest", "--rate", "100")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    key_id = token.split("_")[1]
    assert token.startswith(f"es_{key_id}_")
    [created] = audit_lines(made.stderr)
    assert created["action"] == "key.created"
    assert created["target"] == key_id
    assert created["new_key_name"] == "shop"
    assert token not in made.stderr
    assert token.split("_", 2)[2] not in made.stderr

    proc, port = start_api(cluster, "0.0.0.0")  # keys exist: no --insecure needed
    cluster.wait_ready(proc, port)
    assert proc.log_events(
        "API keys required: every request needs one but /healthz, /readyz, /openapi.json and the docs"
    )
    url = f"http://127.0.0.1:{port}"
    assert httpx.post(f"{url}/events", json=EVENT, timeout=10).status_code == 401
    ok = httpx.post(f"{url}/events", json=EVENT, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 202
    assert ok.headers["ratelimit-limit"] == "100"

    listed = run_cli(cluster, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [key] = json.loads(listed.stdout)
    assert (key["id"], key["name"], key["scope"], key["revoked"]) == (key_id, "shop", "ingest", False)
    assert token not in listed.stdout

    revoked = run_cli(cluster, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    [record] = audit_lines(revoked.stderr)
    assert (record["action"], record["target"], record["outcome"]) == ("key.revoked", key_id, "ok")
    r = httpx.post(f"{url}/events", json=EVENT, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]
    assert cluster.stop(proc) == 0


def test_keys_commands_refuse_bad_input(cluster: Cluster) -> None:
    bad = run_cli(cluster, "keys", "create", "--name", "x", "--scope", "root")
    assert bad.returncode == 1
    assert "scope" in bad.stderr
    unknown = run_cli(cluster, "keys", "revoke", "000000000000")
    assert unknown.returncode == 1
    assert "not found" in unknown.stderr


def test_keys_commands_say_when_redis_is_unreachable(cluster: Cluster) -> None:
    env = cluster.env(EVENTSTREAM_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    r = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "list"],
        env=env, cwd=cluster.tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "cannot reach Redis" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unreachable_redis_refuses_a_public_address(cluster: Cluster) -> None:
    port = free_port()
    env = cluster.env(EVENTSTREAM_REDIS_URL=f"redis://127.0.0.1:{free_port()}")
    proc = cluster.spawn("api", ["api", "--host", "0.0.0.0", "--port", str(port)], env)
    assert cluster.wait_exit(proc) == 2
    wait_for(lambda: "cannot be reached" in proc.stderr(), "the refusal message", 5)


def test_forwarded_headers_cannot_dodge_the_anonymous_limit_and_no_server_header(cluster: Cluster) -> None:
    port = free_port()
    env = cluster.env(EVENTSTREAM_ANONYMOUS_RATE="0.01", EVENTSTREAM_ANONYMOUS_BURST="2")
    proc = cluster.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], env)
    cluster.wait_ready(proc, port)
    url = f"http://127.0.0.1:{port}/events"
    statuses = [
        httpx.post(url, json=EVENT, headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10).status_code
        for i in range(4)
    ]
    assert statuses == [202, 202, 429, 429]
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert "server" not in r.headers
    assert cluster.stop(proc) == 0


def test_keys_create_accepts_a_rate_per_second(cluster: Cluster) -> None:
    made = run_cli(cluster, "keys", "create", "--name", "shop", "--scope", "ingest", "--rate", "200/s")
    assert made.returncode == 0, made.stderr
    assert "200 events/s, burst 200" in made.stderr
    bad = run_cli(cluster, "keys", "create", "--name", "shop", "--scope", "ingest", "--rate", "fast")
    assert bad.returncode == 1
    assert "events per second" in bad.stderr
    tiny = run_cli(cluster, "keys", "create", "--name", "shop", "--scope", "ingest", "--rate", "1e-12/s")
    assert tiny.returncode == 1
    assert "0.001" in tiny.stderr
