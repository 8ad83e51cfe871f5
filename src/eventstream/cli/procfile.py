"""``eventstream procfile``: run the processes of a Procfile (API + N workers) and supervise them.

A Procfile has one ``name: command`` line per process type (``#`` starts a comment).
An optional ``release`` entry runs first, once, to completion (e.g. migrations); then
every other entry starts once, except ``worker``, which starts ``--workers`` times.
Each command runs under ``/bin/sh`` in a process group of its own, its output
prefixed with its name. SIGTERM or Ctrl-C stops them all gracefully: each group is
sent SIGTERM and given the worker's shutdown grace (twice, plus a margin) before it
is killed. When any process exits on its own, the others are stopped too.

Generic Procfile runners (honcho, foreman) kill whatever is still running a few
seconds after SIGTERM, which cuts a worker's graceful stop short; this one waits.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, BinaryIO

import typer

from eventstream.cli.common import cli, console, settings_or_exit

LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
RELEASE = "release"
WORKER = "worker"


class ProcfileError(ValueError):
    pass


def parse_procfile(text: str) -> dict[str, str]:
    """``{name: command}`` in file order; blank lines and ``#`` comments are skipped."""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise ProcfileError(f"line {number} is not `name: command`: {raw!r}")
        name, command = match.groups()
        if name in entries:
            raise ProcfileError(f"line {number}: process type {name!r} is defined twice")
        entries[name] = command
    if not entries:
        raise ProcfileError("no processes defined")
    return entries


@dataclass
class Child:
    label: str
    popen: subprocess.Popen[bytes]
    relay: threading.Thread

    @property
    def pid(self) -> int:
        return self.popen.pid

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a zombie leader of a group we no longer own
            return False
        return True

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


_out_lock = threading.Lock()


def _relay(label: str, width: int, stream: IO[bytes]) -> None:
    prefix = f"{label:<{width}} | ".encode()
    out: BinaryIO | None = sys.__stdout__.buffer if sys.__stdout__ is not None else None  # type: ignore[assignment]
    for line in iter(stream.readline, b""):
        if out is None:
            continue  # keep reading: a child blocked on a full pipe could not stop
        with _out_lock:
            try:
                out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                out.flush()
            except (OSError, ValueError):  # our reader went away (a closed pipe, a full disk)
                out = None
    stream.close()


COMPOUND = re.compile(r"[;&|<>()`\n]")
# keywords and builtins that cannot (or need not) be exec'd
NOT_EXECUTABLE = {"if", "for", "while", "until", "case", "{", "!", "exec", "exit", "cd", "export",
                  "set", "unset", ".", "source", "eval", ":", "trap", "wait", "umask", "ulimit",
                  "readonly", "shift", "return", "alias"}  # fmt: skip


def shell_argv(command: str) -> list[str]:
    """``sh -c COMMAND``; a plain command is exec'd, so its own exit status is the one reported."""
    first = command.split(maxsplit=1)[0]
    if COMPOUND.search(command) or first in NOT_EXECUTABLE or "=" in first:
        return ["/bin/sh", "-c", command]
    return ["/bin/sh", "-c", f"exec {command}"]


def _start(label: str, width: int, command: str, env: dict[str, str], cwd: Path) -> Child:
    popen = subprocess.Popen(
        shell_argv(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,  # its own process group: the stop signal reaches the whole command
    )
    assert popen.stdout is not None
    relay = threading.Thread(target=_relay, args=(label, width, popen.stdout), daemon=True)
    relay.start()
    _say(f"{label} started (pid {popen.pid}): {command}")
    return Child(label, popen, relay)


def _say(message: str) -> None:
    with _out_lock:
        console.print(f"[bold]procfile[/bold] | {message}", highlight=False, soft_wrap=True)


def _run_release(command: str, env: dict[str, str], cwd: Path, width: int) -> int:
    child = _start(RELEASE, width, command, env, cwd)
    code = child.popen.wait()
    child.relay.join(5)
    _say(f"{RELEASE} exited with code {code}")
    return code


def _stop_all(children: list[Child], grace_s: float) -> bool:
    """SIGTERM every group, wait for them up to ``grace_s``, SIGKILL the rest; True if all stopped."""
    for child in children:
        if child.group_alive():
            child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    clean = True
    for child in children:
        while child.popen.poll() is None or child.group_alive():
            if time.monotonic() >= deadline:
                _say(f"{child.label} did not stop within {grace_s:g}s; killing it")
                child.signal_group(signal.SIGKILL)
                child.popen.wait()
                clean = False
                break
            time.sleep(0.05)
        child.relay.join(5)
        code = child.popen.returncode
        _say(f"{child.label} stopped (exit code {code})")
        # ended by the stop signal itself after its own graceful stop: a stop all the same
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            clean = False
    return clean


@cli.command()
def procfile(
    file: Annotated[Path, typer.Option("--file", "-f", metavar="FILE", help="The Procfile to run.")] = Path(
        "Procfile"
    ),
    workers: Annotated[
        int, typer.Option(min=0, metavar="N", help="How many `worker` processes to start.")
    ] = 1,
) -> None:
    """Run a Procfile's processes (the API and N workers) and stop them all together.

    The local form of the production topology: one API and N workers against one
    Redis (EVENTSTREAM_REDIS_URL) and one store (EVENTSTREAM_DATABASE_URL). A `release`
    entry runs first, once. SIGTERM or Ctrl-C stops everything gracefully; exit code 0
    when every process stopped cleanly.
    """
    from eventstream.logs import protect_output

    protect_output()
    settings = settings_or_exit()
    try:
        entries = parse_procfile(file.read_text())
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot read {file}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    except ProcfileError as exc:
        console.print(f"[red]error:[/red] {file}: {exc}")
        raise typer.Exit(2) from None
    if workers > 0 and WORKER not in entries:
        console.print(f"[red]error:[/red] {file} has no `{WORKER}:` entry to run {workers} of")
        raise typer.Exit(2)
    plan = [
        (f"{name}.{i}", command)
        for name, command in entries.items()
        if name != RELEASE
        for i in range(1, (workers if name == WORKER else 1) + 1)
    ]
    env = {"PYTHONUNBUFFERED": "1", **os.environ}
    cwd = file.resolve().parent
    width = max([len(label) for label, _ in plan] + [len(RELEASE)])

    stopping = False
    got: list[str] = []

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        got.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    if RELEASE in entries:
        code = _run_release(entries[RELEASE], env, cwd, width)
        if code != 0:
            console.print(
                f"[red]error:[/red] the `{RELEASE}` command failed (exit code {code}); not starting"
            )
            raise typer.Exit(1)
        if stopping:
            raise typer.Exit(0)

    children = [_start(label, width, command, env, cwd) for label, command in plan]
    code = 0
    while not stopping:
        for child in children:
            if child.popen.poll() is not None:
                _say(f"{child.label} exited on its own (exit code {child.popen.returncode}); stopping")
                code = child.popen.returncode or 1
                stopping = True
                break
        else:
            time.sleep(0.1)
    if got:
        _say(f"{got[0]} received; stopping")
    # a worker may take the grace period to finish handlers, as long again to record
    # their outcomes, and a few seconds to stop its internal tasks
    clean = _stop_all(children, 2 * settings.shutdown_grace + 10)
    if code == 0 and not clean:
        code = 1
    raise typer.Exit(code)
