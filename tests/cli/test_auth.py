"""The operator commands carry the API key as `Authorization: Bearer`, and say why the API refused."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.cli import run_cli
from tests.support.processes import Api, Cluster

TOKEN = re.compile(r"es_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
UNKNOWN_ID = "0190d9b8-0000-7000-8000-000000000000"


def create_key(cluster: Cluster, scope: str) -> str:
    """`eventstream keys create` (direct Redis access, like an operator on the host); the printed key."""
    done = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "create", "--name", f"cli-{scope}", "--scope", scope],
        capture_output=True,
        text=True,
        env=cluster.env(),
        cwd=cluster.tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = TOKEN.search(done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return match.group(0)


@pytest.fixture
def keys(cluster: Cluster, api: Api) -> dict[str, str]:
    return {scope: create_key(cluster, scope) for scope in ("read", "admin")}


def test_without_a_key_the_refusal_is_explained(api: Api, keys: dict[str, str]) -> None:
    r = run_cli("dlq", "list", url=api.url)
    assert r.code == 2
    assert f"the API at {api.url} refused the request (401)" in r.stderr
    assert "pass --api-key or set EVENTSTREAM_API_KEY" in r.stderr
    assert r.stdout == ""


def test_a_wrong_key_is_refused(api: Api, keys: dict[str, str]) -> None:
    wrong = "es_000000000000_" + "A" * 43
    r = run_cli("events", "show", UNKNOWN_ID, "--api-key", wrong, url=api.url)
    assert r.code == 2
    assert "refused the request (401)" in r.stderr


def test_a_read_key_reads(api: Api, keys: dict[str, str]) -> None:
    env = {"EVENTSTREAM_API_KEY": keys["read"]}
    r = run_cli("dlq", "list", url=api.url, env=env)
    assert (r.code, r.stdout.strip()) == (0, "the DLQ is empty"), r.stderr
    r = run_cli("stats", "--once", "--json", "--interval", "0.1", url=api.url, env=env)
    assert r.code == 0, r.stderr
    r = run_cli("events", "show", UNKNOWN_ID, url=api.url, env=env)
    assert r.code == 1
    assert f"no such event: {UNKNOWN_ID}" in r.stderr


def test_a_read_key_cannot_replay_or_delete(api: Api, keys: dict[str, str]) -> None:
    for args in (("dlq", "replay", "--all"), ("dlq", "delete", UNKNOWN_ID)):
        r = run_cli(*args, "--api-key", keys["read"], url=api.url)
        assert r.code == 2, (args, r.stderr)
        assert "refused the request (403)" in r.stderr
        assert "pass --api-key" not in r.stderr


def test_an_admin_key_does_everything(api: Api, keys: dict[str, str]) -> None:
    env = {"EVENTSTREAM_API_KEY": keys["admin"]}
    r = run_cli("dlq", "replay", "--all", url=api.url, env=env)
    assert r.code == 0, r.stderr
    assert "replayed 0 dead event(s)" in r.stdout
    r = run_cli("dlq", "delete", UNKNOWN_ID, url=api.url, env=env)
    assert r.code == 1
    assert f"no such event in the DLQ: {UNKNOWN_ID}" in r.stderr
