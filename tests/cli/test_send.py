"""``eventstream send``: one event, and JSON Lines files in batches, against a real API.

Each command runs as a real subprocess (tests/support/cli.py); what it did is read back
from the API (``received`` counts events accepted, never duplicates).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventstream import Client
from eventstream.cli.send import DEFAULT_BATCH
from eventstream.embedded import free_port
from tests.support.cli import Run, run_cli
from tests.support.http import get_metrics
from tests.support.processes import Api, Cluster
from tests.support.proxy import PASS, RESET, FaultProxy, latency
from tests.support.waiting import wait_for

GOOD = '{"type": "OK", "payload": {"n": %d}}'


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def summary(r: Run) -> dict[str, Any]:
    """The --json summary (the last line of stdout)."""
    body: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return body


def counts(r: Run) -> tuple[int, ...]:
    s = summary(r)
    return s["read"], s["accepted"], s["duplicates"], s["rejected"]


def test_the_default_batch_is_the_client_s() -> None:
    assert inspect.signature(Client).parameters["max_batch"].default == DEFAULT_BATCH


# ---- one event ----------------------------------------------------------------------


def test_one_event_is_accepted_then_a_duplicate_under_its_key(api: Api, client: httpx.Client) -> None:
    args = ["send", "OK", "--payload", '{"a": 1}', "--idempotency-key", "order-1", "--source", "shop"]
    first = run_cli(*args, "--json", url=api.url)
    assert first.code == 0, first.stderr
    answer = json.loads(first.stdout)
    assert answer["duplicate"] is False
    event = client.get(f"/events/{answer['eventId']}").json()
    assert (event["payload"], event["source"], event["idempotencyKey"]) == ({"a": 1}, "shop", "order-1")
    again = run_cli(*args, url=api.url)
    assert again.code == 0, again.stderr
    assert again.stdout.startswith(f"{answer['eventId']} (a duplicate"), again.stdout
    assert get_metrics(client)["received"] == 1


def test_a_payload_from_a_file_and_the_default_empty_payload(
    api: Api, client: httpx.Client, tmp_path: Path
) -> None:
    (tmp_path / "p.json").write_text('{"from": "file"}')
    r = run_cli("send", "OK", "--payload", f"@{tmp_path / 'p.json'}", "--ordering-key", "k", url=api.url)
    assert r.code == 0, r.stderr
    event_id, word = r.stdout.split()
    assert word == "accepted"
    assert client.get(f"/events/{event_id}").json()["payload"] == {"from": "file"}
    r = run_cli("send", "OK", "--json", url=api.url)
    assert r.code == 0, r.stderr
    assert client.get(f"/events/{json.loads(r.stdout)['eventId']}").json()["payload"] == {}


def test_an_invalid_event_is_refused_with_the_field_named(api: Api, client: httpx.Client) -> None:
    r = run_cli("send", "no spaces allowed", url=api.url)
    assert r.code == 2, r.stdout
    assert "refused the request (422)" in r.stderr, r.stderr
    assert "$.type" in r.stderr, r.stderr
    r = run_cli("send", "OK", "--timestamp", "yesterday", url=api.url)
    assert (r.code, "$.timestamp" in r.stderr) == (2, True), r.stderr
    r = run_cli("send", "OK", "--payload", "[1, 2]", url=api.url)
    assert (r.code, "must be a JSON object" in r.stderr) == (2, True), r.stderr
    assert get_metrics(client)["received"] == 0


def test_an_unreachable_api_is_exit_2() -> None:
    r = run_cli("send", "OK", url=f"http://127.0.0.1:{free_port()}")
    assert r.code == 2
    assert "cannot reach the EventStream API" in r.stderr, r.stderr
    assert "EVENTSTREAM_API_URL" in r.stderr, r.stderr


def test_type_and_file_are_one_or_the_other(tmp_path: Path) -> None:
    assert run_cli("send").code == 2
    assert run_cli("send", "OK", "--file", str(tmp_path / "x")).code == 2
    r = run_cli("send", "--file", str(tmp_path / "x"), "--source", "s")
    assert (r.code, "--source: for one event" in r.stderr) == (2, True), r.stderr
    r = run_cli("send", "OK", "--key-prefix", "p")
    assert (r.code, "--key-prefix: for --file" in r.stderr) == (2, True), r.stderr
    r = run_cli("send", "--file", str(tmp_path / "missing.jsonl"))
    assert (r.code, "No such file" in r.stderr) == (2, True), r.stderr


# ---- files --------------------------------------------------------------------------


def test_a_file_with_bad_lines_sends_the_good_ones_and_lists_the_rest(
    api: Api, client: httpx.Client, tmp_path: Path
) -> None:
    lines = [
        GOOD % 1,
        "",  # blank: skipped
        "{not json",
        '["a", "list"]',
        '{"type": "bad type!", "payload": {}}',
        GOOD % 2,
        '{"type": "OK", "payload": {}, "id": "mine-1"}',
    ]
    path = write_lines(tmp_path / "events.jsonl", lines)
    with path.open("ab") as f:  # a line too long to send, then one that is not UTF-8, then a good one
        f.write(b'{"type": "OK", "payload": {"s": "' + b"x" * 1_100_000 + b'"}}\n\xff\xfe\n')
        f.write((GOOD % 3).encode())  # no newline at the end
    r = run_cli("send", "--file", str(path), "--batch-size", "2", url=api.url)
    assert r.code == 1, r.stderr
    rejects = tmp_path / "events.jsonl.rejected.jsonl"
    assert r.stdout.strip() == (
        f"sent {path}: 9 line(s) read, 4 accepted, 0 duplicate(s), 5 rejected (reasons in {rejects})"
    )
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(x["line"], x["text"], x["status"]) for x in records] == [
        (3, "{not json", None),
        (4, '["a", "list"]', None),
        (5, lines[4], 422),
        (8, "", None),
        (9, "\ufffd\ufffd", None),
    ]
    assert records[0]["reason"].startswith("not JSON")
    assert records[1]["reason"] == "not a JSON object but a list"
    assert "$.type" in records[2]["reason"], records[2]
    assert records[3]["reason"] == "the line is longer than 1048576 bytes"
    assert records[4]["reason"].startswith("not JSON"), records[4]
    assert get_metrics(client)["received"] == 4
    # the line with its own id kept it: sending it alone under that key is a duplicate
    dup = run_cli("send", "OK", "--idempotency-key", "mine-1", "--json", url=api.url)
    assert json.loads(dup.stdout)["duplicate"] is True, dup.stdout


def test_sending_the_same_file_again_sends_nothing_twice(
    api: Api, client: httpx.Client, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "a.jsonl", [GOOD % i for i in range(50)])
    first = run_cli("send", "--file", str(path), "--json", "--batch-size", "7", url=api.url)
    assert (first.code, counts(first)) == (0, (50, 50, 0, 0)), first.stderr
    assert summary(first)["rejectsFile"] is None
    assert not (tmp_path / "a.jsonl.rejected.jsonl").exists()
    renamed = path.rename(tmp_path / "b.jsonl")
    again = run_cli("send", "--file", str(renamed), "--json", url=api.url)
    assert (again.code, counts(again)) == (0, (50, 0, 50, 0)), again.stderr
    assert get_metrics(client)["received"] == 50
    # an edited file is a new load; --key-prefix names a load whatever its content
    write_lines(renamed, [GOOD % i for i in range(51)])
    edited = run_cli("send", "--file", str(renamed), "--json", url=api.url)
    assert counts(edited) == (51, 51, 0, 0), edited.stderr
    twin = write_lines(tmp_path / "c.jsonl", [GOOD % i for i in range(51)])
    named = [
        run_cli("send", "--file", str(p), "--key-prefix", "load-7", "--json", url=api.url)
        for p in (renamed, twin)
    ]
    assert [counts(r) for r in named] == [(51, 51, 0, 0), (51, 0, 51, 0)]
    assert get_metrics(client)["received"] == 50 + 51 + 51


def test_stdin_is_keyed_by_each_line_s_content_and_number(api: Api, client: httpx.Client) -> None:
    text = "".join(line + "\n" for line in [GOOD % 1, "42", GOOD % 2])
    first = run_cli("send", "--file", "-", url=api.url, input=text)
    assert first.code == 1, first.stderr
    assert "line 2: rejected: not a JSON object but a number" in first.stderr
    assert first.stdout.strip() == "sent stdin: 3 line(s) read, 2 accepted, 0 duplicate(s), 1 rejected"
    again = run_cli("send", "--file", "-", "--json", url=api.url, input=text.replace("42", GOOD % 3))
    assert (again.code, counts(again)) == (0, (3, 1, 2, 0)), again.stderr
    assert get_metrics(client)["received"] == 3


def test_a_rejects_file_left_by_an_earlier_run_goes_when_nothing_is_rejected(
    api: Api, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "e.jsonl", [GOOD % 1, "nope"])
    assert run_cli("send", "--file", str(path), url=api.url).code == 1
    rejects = tmp_path / "e.jsonl.rejected.jsonl"
    assert rejects.exists()
    write_lines(path, [GOOD % 1, GOOD % 2])
    assert run_cli("send", "--file", str(path), url=api.url).code == 0
    assert not rejects.exists()
    r = run_cli("send", "--file", str(path), "--rejects", str(path), url=api.url)
    assert (r.code, "is the input itself" in r.stderr) == (2, True), r.stderr


def test_a_batch_over_the_api_s_limit_is_split_by_the_client(
    api: Api, client: httpx.Client, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "big.jsonl", [GOOD % i for i in range(1001)])
    r = run_cli("send", "--file", str(path), "--batch-size", "1001", "--json", url=api.url)
    assert r.code == 0, r.stderr
    assert (summary(r)["accepted"], summary(r)["rejected"]) == (1001, 0), r.stdout
    assert not (tmp_path / "big.jsonl.rejected.jsonl").exists()
    assert get_metrics(client)["received"] == 1001


def test_a_hundred_thousand_lines_sent_twice_are_a_hundred_thousand_events(
    api: Api, client: httpx.Client, tmp_path: Path
) -> None:
    n = 100_000
    path = tmp_path / "big.jsonl"
    path.write_text("".join(f'{{"type":"OK","payload":{{"i":{i}}}}}\n' for i in range(n)))
    walls = []
    runs = []
    for _ in range(2):
        start = time.monotonic()
        runs.append(run_cli("send", "--file", str(path), "--json", url=api.url, timeout=300))
        walls.append(time.monotonic() - start)
    print(f"100,000 lines: first run {walls[0]:.1f} s, second run {walls[1]:.1f} s")
    assert [r.code for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    assert [counts(r) for r in runs] == [(n, n, 0, 0), (n, 0, n, 0)]
    assert get_metrics(client)["received"] == n


@pytest.mark.parametrize("cut", ["api unreachable", "ctrl-c"])
def test_an_interrupted_load_sent_again_makes_one_event_of_each_line(
    cluster: Cluster, api: Api, client: httpx.Client, tmp_path: Path, cut: str
) -> None:
    """Cut mid-file (the API unreachable, every connection reset, a batch's answer maybe
    lost; or Ctrl-C): exit 2 (130) with how far it got; sent again, each line is in once."""
    n = 2000
    path = write_lines(tmp_path / "cut.jsonl", [GOOD % i for i in range(n)])
    proxy = FaultProxy(api.port).start()
    proc: subprocess.Popen[str] | None = None
    try:
        proxy.set(latency(20))  # slow enough that the cut comes mid-file
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventstream", "send", "--file", str(path), "--batch-size", "20",
             "--json", "--url", f"http://127.0.0.1:{proxy.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        wait_for(lambda: get_metrics(client)["received"] >= 200, "200 events in", 60, 0.02)
        if cut == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            proxy.set(RESET)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == (130 if cut == "ctrl-c" else 2), err
        stopped = json.loads(out.strip().splitlines()[-1])
        assert stopped["complete"] is False, stopped
        assert 0 < stopped["lastLine"] < n, stopped
        if cut != "ctrl-c":
            assert "cannot reach the EventStream API" in err, err
        assert "sending the same input again is safe" in err, err
        proxy.set(PASS)
        received = wait_for(lambda: _settled_received(client), "the last batch to land", 10, 0.1)
        assert stopped["accepted"] <= received < n
        again = run_cli("send", "--file", str(path), "--json", url=f"http://127.0.0.1:{proxy.port}")
    finally:
        if proc is not None and proc.poll() is None:  # a failed test: stop it, close its pipes
            proc.kill()
            proc.communicate()
        proxy.close()
    assert again.code == 0, again.stderr
    read, accepted, duplicates, rejected = counts(again)
    assert (read, accepted + duplicates, duplicates, rejected) == (n, n, received, 0)
    assert get_metrics(client)["received"] == n
    worker = cluster.start_worker(burst=True)
    assert cluster.wait_exit(worker, 120) == 0, worker.logs()
    assert get_metrics(client)["processed"] == n


def _settled_received(client: httpx.Client) -> int | None:
    """``received`` once it holds still for a moment (a batch cut in flight may still land)."""
    before = get_metrics(client)["received"]
    time.sleep(0.3)
    after = get_metrics(client)["received"]
    return after if after == before else None


def test_at_a_terminal_a_progress_bar_then_the_summary(api: Api, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [GOOD % i for i in range(300)])
    env = {"TTY_COMPATIBLE": "1", "TERM": "xterm"}
    r = run_cli("send", "--file", str(path), "--batch-size", "1", url=api.url, env=env)
    assert r.code == 0, r.stderr
    assert "lines/s" in r.stdout, r.stdout
    assert (
        r.stdout.rstrip()
        .splitlines()[-1]
        .endswith(f"sent {path}: 300 line(s) read, 300 accepted, 0 duplicate(s), 0 rejected")
    ), r.stdout[-500:]
    plain = run_cli("send", "--file", str(path), url=api.url)
    assert plain.stdout == f"sent {path}: 300 line(s) read, 0 accepted, 300 duplicate(s), 0 rejected\n"
