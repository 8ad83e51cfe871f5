"""At a terminal, an operator command prints its result and nothing after it: the audit
trail of what it did goes to ``audit.log`` in the data dir (the commands that work on Redis
directly) or to the API's log (the commands that go through the API), not to the person's
screen. (Without a terminal, the records stay on stderr as JSON lines:
tests/security/test_processes.py.)
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

from tests.support.processes import Cluster


def at_a_terminal(cluster: Cluster, *args: str) -> tuple[int, list[str]]:
    """Run the command with stdout and stderr on a pseudo-terminal; its exit code and lines."""
    env = cluster.env(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    del env["EVENTSTREAM_LOG_FORMAT"]  # the default: readable lines at a terminal
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventstream", *args],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env, cwd=cluster.tmp_path,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the command has exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = proc.wait(60)
    text = b"".join(chunks).decode(errors="replace")
    return code, [line for line in text.splitlines() if line.strip()]


def trail(cluster: Cluster) -> list[dict[str, object]]:
    path = cluster.data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_replay_prints_its_result_last_and_the_trail_goes_to_the_api_s_log(cluster: Cluster) -> None:
    api = cluster.start_api()
    code, lines = at_a_terminal(cluster, "dlq", "replay", "--all", "--url", api.url)
    assert code == 0, lines
    assert lines[-1] == "replayed 0 dead event(s): back in the queue, attempts counted afresh", lines
    assert not [line for line in lines if "audit" in line], lines
    assert trail(cluster) == []
    [record] = [r for r in api.proc.log_events("audit") if r["action"] == "replay.dlq"]
    assert (record["action"], record["outcome"], record["key_name"]) == ("replay.dlq", "ok", "anonymous")


def test_keys_print_their_result_and_the_trail_goes_to_the_log(cluster: Cluster) -> None:
    code, lines = at_a_terminal(cluster, "keys", "create", "--name", "shop", "--scope", "read")
    assert code == 0, lines
    assert lines[-1].startswith("es_"), lines
    assert not [line for line in lines if "audit" in line], lines
    key_id = lines[-1].split("_")[1]
    code, lines = at_a_terminal(cluster, "keys", "revoke", key_id)
    assert code == 0, lines
    assert lines == [f"revoked key {key_id} (shop)"], lines
    assert [(r["action"], r["target"]) for r in trail(cluster)] == [
        ("key.created", key_id),
        ("key.revoked", key_id),
    ]
