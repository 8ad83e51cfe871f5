"""``eventstream replay`` (processed events, as new ones) and ``eventstream dlq replay --all``
(dead events) as real subprocesses against a real API process, on the session's Redis and a
SQLite store in tmp set up through the in-process app."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from eventstream.cli import client as cli_client
from eventstream.cli.common import cli
from eventstream.embedded import free_port
from eventstream.replay import engine as replay
from tests.support.asgi import Api, MakeApi, processed
from tests.support.cli import run_cli
from tests.support.factories import Events, post, recording_app
from tests.support.http import get_metrics
from tests.support.processes import Cluster


def serve(cluster: Cluster, api: Api, **env: str) -> str:
    """A real ``eventstream api`` on the in-process app's Redis, prefix and store; its URL."""
    return cluster.start_api(EVENTSTREAM_DATA_DIR=str(Path(api.settings.data_dir).resolve()), **env).url


async def test_replay_from_history_dry_run_filters_and_run(make_api: MakeApi, cluster: Cluster) -> None:
    api = await make_api()
    ids = await processed(api, "A", "B", "A")
    url = serve(cluster, api)
    r = run_cli("replay", "--type", "A", "--dry-run", url=url)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["would replay 2 event(s) from history", f"  {ids[0]}", f"  {ids[2]}"]
    assert await api.stream_len() == 0
    r = run_cli("replay", "--type", "A", "--until", "2000-01-01T00:00:00Z", url=url)
    assert (r.code, r.stdout.strip()) == (0, "replayed 0 event(s) from history"), r.stderr
    r = run_cli("replay", "--type", "A", "--since", "2000-01-01T00:00:00+00:00", "--rate", "500", url=url)
    assert (r.code, r.stdout.strip()) == (0, "replayed 2 event(s) from history"), r.stderr
    seen = []
    await api.burst(recording_app(seen))
    assert sorted(e.replay_of or "" for e in seen) == sorted([ids[0], ids[2]])
    r = run_cli("replay", "--id", ids[1], "--id", "nope", url=url)
    assert r.code == 0, r.stderr
    [line, summary] = r.stdout.splitlines()
    assert line.startswith(f"{ids[1]} -> ")
    assert summary == "replayed 1 event(s) from history"
    assert "not found: nope" in r.stderr


async def test_replay_from_the_dlq_by_type_and_time(make_api: MakeApi, cluster: Cluster) -> None:
    api = await make_api()
    dead = [await api.accepted(t, {}) for t in ("D", "E", "D")]
    await api.burst(recording_app([], dead=frozenset({"D", "E"})))
    url = serve(cluster, api)
    r = run_cli("dlq", "replay", "--all", "--type", "D", "--dry-run", url=url)
    assert r.stdout.splitlines() == ["would replay 2 dead event(s)", f"  {dead[0]}", f"  {dead[2]}"]
    r = run_cli("dlq", "replay", "--all", "--until", "2000-01-01T00:00:00Z", url=url)
    assert r.stdout.startswith("replayed 0 dead event(s):"), r.stderr
    r = run_cli("dlq", "replay", "--all", "--type", "D", url=url)
    assert (r.code, r.stdout.split(":")[0]) == (0, "replayed 2 dead event(s) of type D"), r.stderr
    summary = await api.summary()
    assert (summary["dlq"], summary["queued"]) == (1, 2)
    assert (await api.client.get(f"/events/{dead[0]}")).json()["status"] == "queued"  # the same id


async def test_replay_from_dlq_is_a_deprecated_spelling_of_dlq_replay_all(
    make_api: MakeApi, cluster: Cluster
) -> None:
    api = await make_api()
    dead = [await api.accepted(t, {}) for t in ("D", "E")]
    await api.burst(recording_app([], dead=frozenset({"D", "E"})))
    url = serve(cluster, api)
    r = run_cli("replay", "--from", "dlq", "--type", "D", "--dry-run", url=url)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["would replay 1 dead event(s)", f"  {dead[0]}"]
    assert r.stderr.splitlines() == ["deprecated: `replay --from dlq` is now `dlq replay --all`"]
    r = run_cli("replay", "--from", "dlq", "--data-dir", "/nowhere", url=url)
    assert r.code == 0, r.stderr
    assert r.stdout.startswith("replayed 2 dead event(s):")
    assert "`replay --data-dir` is now `replay --url URL" in " ".join(r.stderr.split())
    assert (await api.summary())["queued"] == 2


async def test_the_rate_is_capped_and_duplicates_are_summed_over_every_page(
    make_api: MakeApi, cluster: Cluster
) -> None:
    api = await make_api(replay_rate=100_000)
    a, b = await processed(api, "A", "A")
    first = await api.client.post("/replay", params={"id": [a, b]}, headers={"Idempotency-Key": "fix-1"})
    assert first.json()["replayed"] == 2
    # at the API's configured 0.1/s one call replays one event: --rate 50 may not lift the
    # cap, so this takes two pages, each finding its replay already made under the key
    url = serve(cluster, api, EVENTSTREAM_REPLAY_RATE="0.1")
    r = run_cli("replay", "--id", a, "--id", b, "--key", "fix-1", "--rate", "50", url=url)
    assert r.code == 0, r.stderr
    assert "… 0 replayed" in r.stderr  # a progress line between two pages
    assert r.stdout.strip().endswith("replayed 0 event(s) from history (2 already replayed under this key)")
    assert (await api.summary())["queued"] == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--rate", "0.05"), 2, "greater than or equal to 0.1"),
        (("--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"), 1, "since must be before"),
    ],
)
def test_replay_usage_errors(args: tuple[str, ...], code: int, message: str) -> None:
    r = run_cli("replay", *args, url=f"http://127.0.0.1:{free_port()}")  # refused before any call
    assert r.code == code
    assert message in r.stderr


# ---- dlq replay --all with filters, over the API ----------------------------------------


def test_dlq_replay_all_takes_the_replay_filters(api: object, client: httpx.Client, events: Events) -> None:
    url = str(client.base_url)
    r = run_cli("dlq", "replay", "--all", "--type", "PERM", "--dry-run", url=url)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == ["would replay 2 dead event(s)", *[f"  {i}" for i in events.perm]]
    r = run_cli("dlq", "replay", "--all", "--since", "2999-01-01T00:00:00Z", "--json", url=url)
    assert json.loads(r.stdout)["replayed"] == 0
    r = run_cli("dlq", "replay", "--all", "--id", events.fail[0], "--id", "nope", "--rate", "5", url=url)
    assert r.code == 0, r.stderr
    assert "replayed 1 dead event(s)" in r.stdout
    assert "not found: nope" in r.stdout
    m = get_metrics(client)
    assert (m["dlq"], m["queued"]) == (2, 1)


@pytest.mark.parametrize(
    "option", [("--since", "2026-01-01"), ("--id", "x"), ("--dry-run",), ("--rate", "5")]
)
def test_dlq_replay_filters_go_with_all(option: tuple[str, ...]) -> None:
    r = run_cli("dlq", "replay", "some-id", *option, url="http://127.0.0.1:9")
    assert r.code == 2
    assert f"{option[0]} goes with --all" in r.stderr


def test_a_paced_dlq_replay_call_outlasts_the_client_s_usual_timeout(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay call may take the server's whole budget pacing its sends: the client waits for it."""
    assert cli_client.REPLAY_TIMEOUT_S >= replay.MAX_REQUEST_S + 20
    api = cluster.start_api(EVENTSTREAM_REPLAY_RATE="1")  # two events: the call takes about 1 s
    with httpx.Client(base_url=api.url, timeout=30) as http:
        for n in range(2):
            post(http, "PERM", n=n)
        worker = cluster.start_worker(burst=True)
        assert cluster.wait_exit(worker) == 0, worker.logs()
        assert get_metrics(http)["dlq"] == 2
        # every other request would give up after 0.3 s here; the replay call must not
        monkeypatch.setattr(cli_client, "DEFAULT_TIMEOUT_S", 0.3)
        result = CliRunner().invoke(cli, ["dlq", "replay", "--all", "--json", "--url", api.url])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["replayed"] == 2
        assert get_metrics(http)["dlq"] == 0
