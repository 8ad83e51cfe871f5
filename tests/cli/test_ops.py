"""``eventstream stats``, ``dlq list|show|replay|delete`` and ``events show`` against a real API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from eventstream.embedded import free_port
from tests.support.cli import run_cli
from tests.support.factories import Events, post
from tests.support.http import get_metrics
from tests.support.processes import Api
from tests.support.waiting import wait_for

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ---- stats ---------------------------------------------------------------------------


def test_stats_once_prints_a_table_of_the_live_numbers(api: Api, events: Events) -> None:
    r = run_cli("stats", "--once", "--interval", "0.2", url=api.url)
    assert r.code == 0, r.stderr
    rows = {cells[1].strip(): cells[2].strip() for cells in _table_rows(r.stdout)}
    assert rows["throughput"].endswith("/s"), rows
    assert rows["received"].endswith("/s"), rows
    assert (rows["backlog"], rows["in flight"], rows["retries"], rows["DLQ"]) == ("0", "0", "0", "3")
    assert (rows["received total"], rows["processed total"], rows["duplicates total"]) == ("6", "3", "0")
    assert api.url in r.stdout


def _table_rows(text: str) -> list[list[str]]:
    return [line.split("│") for line in text.splitlines() if line.count("│") >= 4]


def test_stats_json_has_the_counters_gauges_and_rates(api: Api, client: httpx.Client, events: Events) -> None:
    r = run_cli("stats", "--once", "--json", "--interval", "0.2", url=api.url)
    assert r.code == 0, r.stderr
    snap = json.loads(r.stdout)
    assert snap["received"] == 6
    assert snap["processed"] == 3
    assert snap["deadLettered"] == 3
    assert snap["failed"] == 2 + 3  # PERM twice, FAIL three times
    assert (snap["queued"], snap["pending"], snap["scheduled"], snap["dlq"]) == (0, 0, 0, 3)
    # nothing moved between the two samples
    assert snap["processedPerSecond"] == 0
    assert snap["receivedPerSecond"] == 0


def test_stats_shows_the_ordering_figures(api: Api, client: httpx.Client) -> None:
    """No worker runs: each key's first event is queued, the others parked behind it."""
    for key, n in (("a", 3), ("b", 2)):
        for i in range(n):
            r = client.post("/events", json={"type": "OK", "payload": {"i": i}, "orderingKey": key})
            assert r.status_code == 202, r.text
    r = run_cli("stats", "--once", "--json", "--interval", "0.2", url=api.url)
    assert r.code == 0, r.stderr
    snap = json.loads(r.stdout)
    assert (snap["queued"], snap["parked"], snap["busyKeys"], snap["parkedTotal"]) == (2, 3, 2, 3)
    assert snap["oldestParkedMs"] >= 200  # parked before the first of the two samples
    table = run_cli("stats", "--once", "--interval", "0.2", url=api.url)
    assert table.code == 0, table.stderr
    rows = {cells[1].strip(): cells[2].strip() for cells in _table_rows(table.stdout)}
    assert (rows["backlog"], rows["parked"], rows["busy keys"]) == ("2", "3", "2")
    assert re.fullmatch(r"\d+\.\ds", rows["oldest parked"]), rows


def test_stats_rates_follow_the_counters(api: Api, client: httpx.Client) -> None:
    """Events accepted while stats streams JSON show up as a received rate above zero."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstream", "stats", "--json", "--interval", "0.3", "--url", api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["received"] == 0
        for i in range(20):
            post(client, "OK", n=i)
        seen: list[dict[str, float]] = []
        for _ in range(50):
            snap = json.loads(proc.stdout.readline())
            seen.append(snap)
            if snap["received"] == 20:
                break
        assert any(s["receivedPerSecond"] > 0 for s in seen), seen
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_stats_live_view_refreshes_until_ctrl_c(api: Api, client: httpx.Client, events: Events) -> None:
    """The live view (drawn as on a terminal: TTY_COMPATIBLE) follows the numbers; Ctrl-C ends it with 0."""
    env = {**os.environ, "COLUMNS": "200", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}
    env.pop("EVENTSTREAM_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstream", "stats", "--interval", "0.2", "--url", api.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    seen = bytearray()

    def view_shows(received: int) -> bool:
        chunk = proc.stdout.read() if proc.stdout is not None else None
        seen.extend(chunk or b"")
        text = ANSI.sub("", seen[-20_000:].decode(errors="replace"))
        return re.search(rf"received total\s*│\s*{received}\s*│", text) is not None

    try:
        wait_for(lambda: view_shows(6), "the live view", last=lambda: bytes(seen[-2000:]))
        post(client, "OK", n=99)  # the view follows
        wait_for(lambda: view_shows(7), "the live view to refresh", last=lambda: bytes(seen[-2000:]))
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


# ---- dlq -----------------------------------------------------------------------------


def test_dlq_list_shows_every_dead_event_newest_first(api: Api, events: Events) -> None:
    r = run_cli("dlq", "list", url=api.url)
    assert r.code == 0, r.stderr
    positions = [r.stdout.index(i) for i in reversed(events.dead)]
    assert positions == sorted(positions), r.stdout  # newest first
    assert "refused for good" in r.stdout
    assert "this handler always fails" in r.stdout
    assert "3 shown" in r.stdout
    for ok in events.ok:
        assert ok not in r.stdout


def test_dlq_list_filters_by_type_and_limits(api: Api, events: Events) -> None:
    r = run_cli("dlq", "list", "--type", "FAIL", "--json", url=api.url)
    assert r.code == 0, r.stderr
    body = json.loads(r.stdout)
    assert [i["id"] for i in body["items"]] == events.fail
    assert body["items"][0]["attempts"] == 3

    r = run_cli("dlq", "list", "--limit", "1", url=api.url)
    assert r.code == 0, r.stderr
    assert "1 shown; more with a higher --limit" in r.stdout

    r = run_cli("dlq", "list", "--type", "NOPE", url=api.url)
    assert (r.code, r.stdout.strip()) == (0, "no dead events of type NOPE")


def test_dlq_list_bad_type_is_a_clear_error(api: Api) -> None:
    r = run_cli("dlq", "list", "--type", "bad type!", url=api.url)
    assert r.code == 2
    assert "answered 422" in r.stderr
    assert "type" in r.stderr


def test_dlq_show(api: Api, events: Events) -> None:
    dead = events.perm[0]
    r = run_cli("dlq", "show", dead, url=api.url)
    assert r.code == 0, r.stderr
    assert dead in r.stdout
    assert "PermanentError: refused for good" in r.stdout
    assert '"n": 0' in r.stdout  # the payload
    assert "traceback" in r.stdout

    r = run_cli("dlq", "show", dead, "--json", url=api.url)
    assert r.code == 0, r.stderr
    item = json.loads(r.stdout)
    assert (item["id"], item["type"], item["attempts"], item["status"]) == (dead, "PERM", 1, "dead")


def test_dlq_replay_one_sends_it_back_with_the_same_id(
    api: Api, client: httpx.Client, events: Events
) -> None:
    dead = events.fail[0]
    r = run_cli("dlq", "replay", dead, url=api.url)
    assert r.code == 0, r.stderr
    assert f"replayed {dead}" in r.stdout
    event = client.get(f"/events/{dead}").json()
    assert event["status"] == "queued"
    assert get_metrics(client)["dlq"] == 2


def test_dlq_replay_all_of_a_type(api: Api, client: httpx.Client, events: Events) -> None:
    r = run_cli("dlq", "replay", "--all", "--type", "PERM", "--json", url=api.url)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["replayed"] == 2
    for perm in events.perm:
        assert client.get(f"/events/{perm}").json()["status"] == "queued"
    assert get_metrics(client)["dlq"] == 1

    r = run_cli("dlq", "replay", "--all", url=api.url)
    assert r.code == 0, r.stderr
    assert "replayed 1 dead event(s)" in r.stdout
    assert get_metrics(client)["dlq"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give either an event ID or --all"),
        (("some-id", "--all"), "give either an event ID or --all"),
        (("some-id", "--type", "PERM"), "--type goes with --all"),
    ],
)
def test_dlq_replay_usage_errors(args: tuple[str, ...], message: str) -> None:
    r = run_cli("dlq", "replay", *args, url="http://127.0.0.1:9")
    assert r.code == 2
    assert message in r.stderr


def test_dlq_delete(api: Api, client: httpx.Client, events: Events) -> None:
    dead = events.perm[1]
    r = run_cli("dlq", "delete", dead, url=api.url)
    assert r.code == 0, r.stderr
    assert f"deleted {dead}" in r.stdout
    m = get_metrics(client)
    assert (m["dlq"], m["deleted"]) == (2, 1)
    r = run_cli("dlq", "show", dead, url=api.url)
    assert r.code == 1
    assert f"no such event in the DLQ: {dead}" in r.stderr


@pytest.mark.parametrize(
    "args",
    [("dlq", "show"), ("dlq", "replay"), ("dlq", "delete")],
)
def test_dlq_unknown_id_exits_1(api: Api, args: tuple[str, ...]) -> None:
    r = run_cli(*args, "0190d9b8-0000-7000-8000-000000000000", url=api.url)
    assert r.code == 1
    assert "no such event in the DLQ: 0190d9b8-0000-7000-8000-000000000000" in r.stderr
    assert r.stdout == ""


# ---- events --------------------------------------------------------------------------


def test_events_show_a_processed_event(api: Api, events: Events) -> None:
    ok = events.ok[1]
    r = run_cli("events", "show", ok, url=api.url)
    assert r.code == 0, r.stderr
    assert ok in r.stdout
    assert "processed" in r.stdout
    assert '"n": 1' in r.stdout
    r = run_cli("events", "show", ok, "--json", url=api.url)
    item = json.loads(r.stdout)
    assert (item["status"], item["attempts"], item["type"]) == ("processed", 1, "OK")


def test_events_show_a_dead_event_with_its_reason(api: Api, events: Events) -> None:
    r = run_cli("events", "show", events.fail[0], url=api.url)
    assert r.code == 0, r.stderr
    assert "dead" in r.stdout
    assert "RuntimeError: this handler always fails" in r.stdout
    rows = {cells[1].strip(): cells[2].strip() for cells in _fields_rows(r.stdout)}
    assert (rows["status"], rows["attempts"], rows["type"]) == ("dead", "3", "FAIL")


def _fields_rows(text: str) -> list[list[str]]:
    return [line.split("│") for line in text.splitlines() if line.count("│") == 3]


def test_events_show_a_queued_event(api: Api, client: httpx.Client) -> None:
    queued = post(client, "OK", n=7)  # no worker runs
    r = run_cli("events", "show", queued, "--json", url=api.url)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "queued"


def test_events_show_an_event_waiting_behind_its_ordering_key(api: Api, client: httpx.Client) -> None:
    ids = []
    for n in range(2):  # no worker runs: the second waits behind the first
        r = client.post("/events", json={"type": "OK", "payload": {"n": n}, "orderingKey": "acct-9"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["eventId"])
    r = run_cli("events", "show", ids[1], url=api.url)
    assert r.code == 0, r.stderr
    rows = {cells[1].strip(): cells[2].strip() for cells in _fields_rows(r.stdout)}
    assert (rows["status"], rows["ordering key"]) == ("queued", "acct-9")
    assert rows["waiting behind its key since"].endswith("Z")
    r = run_cli("events", "show", ids[0], url=api.url)
    assert "waiting behind its key since" not in r.stdout


def test_events_show_unknown_exits_1(api: Api) -> None:
    r = run_cli("events", "show", "nope", url=api.url)
    assert r.code == 1
    assert "no such event: nope" in r.stderr


# ---- failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("stats", "--once", "--interval", "0.1"),
        ("stats", "--interval", "0.1"),
        ("dlq", "list"),
        ("dlq", "show", "x"),
        ("dlq", "replay", "--all"),
        ("dlq", "delete", "x"),
        ("events", "show", "x"),
        ("replay", "--type", "A"),
        ("replay", "--dry-run"),
    ],
)
def test_unreachable_api_exits_2_naming_the_url(args: tuple[str, ...]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli(*args, url=url)
    assert r.code == 2
    assert f"cannot reach the EventStream API at {url}" in r.stderr
    assert "Traceback" not in r.stderr


def test_url_option_wins_over_the_environment(api: Api) -> None:
    r = run_cli("dlq", "list", "--url", api.url, env={"EVENTSTREAM_API_URL": "http://127.0.0.1:9"})
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "the DLQ is empty"
