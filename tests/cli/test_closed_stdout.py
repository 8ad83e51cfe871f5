"""A closed stdout is a normal end: ``eventstream ... | head`` exits 0 with nothing on stderr.

Each command runs as a real process whose stdout is a pipe with no reader (its read end
closed before the command starts), so every write to it fails as it does once ``head``
has read its lines: deterministic, where a real ``| head`` races the writer.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.processes import Api, Cluster

COMMANDS = [
    ["version"],
    ["--help"],
    ["dlq", "list", "--limit", "50"],
    ["dlq", "list", "--json"],
    ["stats", "--once", "--json", "--interval", "0.1"],
    ["dlq", "replay", "--all", "--dry-run"],
    ["replay", "--dry-run"],
    ["keys", "list", "--json"],
    ["audit", "--json"],
    ["audit"],
    ["db", "current"],
    ["send", "OK", "--payload", '{"a": 1}'],
    ["send", "--file", "/dev/null"],
]


OVER_HTTP = {"dlq", "stats", "replay", "send"}


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_reader_gone_is_a_normal_end(
    request: pytest.FixtureRequest, cluster: Cluster, args: list[str]
) -> None:
    env = cluster.env(COLUMNS="120")
    if args[0] in OVER_HTTP:
        api: Api = request.getfixturevalue("api")
        env["EVENTSTREAM_API_URL"] = api.url
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "eventstream", *args],
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cluster.tmp_path,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    stderr = done.stderr.decode(errors="replace")
    assert (done.returncode, stderr) == (0, ""), stderr
