"""The process supervisor of ``eventstream up``: its children, the stop signals, the stop.

``up`` never leaves a child behind: SIGINT, SIGTERM and SIGHUP ask every child to stop
gracefully (SIGTERM), a child still running after the grace period, or at a second
signal, is killed, and every child is waited for. Only flags are set from the signal
handlers, so a stop works whatever happened to the terminal or the pipe we print to.
"""

from __future__ import annotations

import signal
import subprocess
import time

from eventstream.cli.common import console

Children = list[subprocess.Popen[bytes]]


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask ``up`` to stop; the second one to stop at once.

    Only flags are set here: printing from a signal handler could interrupt a print."""

    def __init__(self) -> None:
        self.received = 0
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received += 1

    @property
    def now(self) -> bool:
        return self.received > 1


def supervise(children: Children, signals: StopSignals) -> int:
    """Wait until a stop signal, or until a child exits on its own (then its exit code)."""
    while not signals.received:
        for child in children:
            if child.poll() is not None:
                console.print(f"[red]a process exited (code {child.returncode}); stopping[/red]")
                return child.returncode or 1
        time.sleep(0.2)
    return 0


def stop_children(children: Children, signals: StopSignals, grace_s: float) -> None:
    """SIGTERM every child still running; SIGKILL those still running after ``grace_s``
    (a worker may take the grace period to finish handlers, as long again to record their
    outcomes, and a few seconds to stop its internal tasks), or at a second Ctrl-C."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    if any(child.poll() is None for child in children):
        console.print(
            f"stopping: handlers still running get up to {grace_s:g} s (Ctrl-C again to stop them now)"
        )
    deadline = time.monotonic() + grace_s
    while any(child.poll() is None for child in children):
        if signals.now or time.monotonic() >= deadline:
            why = "a second stop signal" if signals.now else "they did not stop in time"
            alive = [child for child in children if child.poll() is None]
            console.print(f"[red]killing {', '.join(str(c.pid) for c in alive)}: {why}[/red]")
            for child in alive:
                child.kill()
            for child in alive:
                child.wait()
            break
        time.sleep(0.05)
    for child in children:
        # -SIGTERM / -SIGINT: ended by the stop signal itself, after its own graceful
        # stop (a second signal can land while it exits): a stop all the same
        if child.returncode not in (0, None, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL):
            console.print(f"[yellow]process {child.pid} exited with code {child.returncode}[/yellow]")
