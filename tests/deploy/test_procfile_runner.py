"""`eventstream procfile` on small Procfiles: release first, scaling, stopping, bad files."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from eventstream.cli.procfile import ProcfileError, parse_procfile, shell_argv
from tests.support.cli import run_cli
from tests.support.processes import Cluster
from tests.support.waiting import wait_for

PY = sys.executable


def test_parse_procfile_skips_comments_and_blank_lines() -> None:
    text = "# a comment\n\napi: eventstream api --port 1\nworker:   eventstream worker  \n"
    assert parse_procfile(text) == {"api": "eventstream api --port 1", "worker": "eventstream worker"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("api eventstream api\n", "line 1 is not `name: command`"),
        ("a: x\na: y\n", "line 2: process type 'a' is defined twice"),
        ("# nothing\n", "no processes defined"),
    ],
)
def test_parse_procfile_refuses_bad_files(text: str, message: str) -> None:
    with pytest.raises(ProcfileError, match=message):
        parse_procfile(text)


def test_simple_commands_are_execd_compound_ones_are_not() -> None:
    assert shell_argv("eventstream worker $APP") == ["/bin/sh", "-c", "exec eventstream worker $APP"]
    for command in ("a && b", "exec sleep 1", "exit 3", "FOO=1 eventstream api", "cd /srv; run"):
        assert shell_argv(command) == ["/bin/sh", "-c", command]


def _procfile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Procfile"
    path.write_text(text)
    return path


def test_release_runs_first_then_every_process_scaled(cluster: Cluster, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    procfile = _procfile(
        tmp_path,
        f"release: touch {marks}/release\n"
        f"worker: test -e {marks}/release && touch {marks}/worker.$$ && exec sleep 60\n"
        f"other: exec {PY} -c 'import time; time.sleep(60)'\n",
    )
    runner = cluster.spawn("procfile", ["procfile", "--file", str(procfile), "--workers", "2"], cluster.env())
    wait_for(lambda: len(list(marks.glob("worker.*"))) == 2, "two workers started after the release")
    runner.popen.send_signal(signal.SIGTERM)
    assert cluster.wait_exit(runner) == 0, runner.logs()
    log = runner.stderr()
    assert "release exited with code 0" in log
    for label in ("worker.1", "worker.2", "other.1"):
        assert f"{label} stopped" in log
    assert cluster.marked_pids() == []


def test_a_failing_release_starts_nothing(tmp_path: Path) -> None:
    procfile = _procfile(tmp_path, f"release: exit 3\nworker: touch {tmp_path}/started\n")
    r = run_cli("procfile", "--file", str(procfile))
    assert r.code == 1
    assert "the `release` command failed (exit code 3); not starting" in r.stderr
    assert not (tmp_path / "started").exists()


def test_a_process_that_exits_stops_the_others(cluster: Cluster, tmp_path: Path) -> None:
    procfile = _procfile(tmp_path, "worker: exec sleep 60\nbroken: exit 4\n")
    runner = cluster.spawn("procfile", ["procfile", "--file", str(procfile)], cluster.env())
    assert cluster.wait_exit(runner) == 4, runner.logs()
    log = runner.stderr()
    assert "broken.1 exited on its own (exit code 4); stopping" in log
    assert "worker.1 stopped" in log
    assert cluster.marked_pids() == []


def test_output_is_prefixed_with_the_process_name(tmp_path: Path) -> None:
    procfile = _procfile(tmp_path, "hello: echo hi there\n")
    r = run_cli("procfile", "--file", str(procfile), "--workers", "0")
    assert r.code == 1  # it exited on its own
    assert "hello.1 | hi there" in r.stdout


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        (None, (), "cannot read"),
        ("api: x\n", ("--workers", "2"), "has no `worker:` entry to run 2 of"),
        ("nonsense\n", (), "line 1 is not `name: command`"),
    ],
)
def test_bad_procfiles_exit_2(tmp_path: Path, text: str | None, args: tuple[str, ...], message: str) -> None:
    path = tmp_path / "Procfile"
    if text is not None:
        path.write_text(text)
    r = run_cli("procfile", "--file", str(path), *args)
    assert r.code == 2
    assert message in r.stderr
