"""The supervisor of ``eventstream up``, on real child processes: it notices a child that
exits on its own, stops the others with SIGTERM, kills one that outlasts the grace period
or a second stop signal, and leaves none behind.

(tests/e2e/test_up.py runs the whole ``up``, Ctrl-C through a closed pipe included.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from eventstream.cli.supervisor import Children, StopSignals, stop_children, supervise

SLEEPS = "import time; print('ready', flush=True); time.sleep(60)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture
def signals() -> Iterator[StopSignals]:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield StopSignals()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.fixture
def children() -> Iterator[Children]:
    started: Children = []
    yield started
    for child in started:
        if child.poll() is None:  # whatever a failed test left running
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def said(capsys: pytest.CaptureFixture[str]) -> str:
    """What was printed to stderr, on one line (Rich wraps to its width)."""
    return " ".join(capsys.readouterr().err.split())


def start(children: Children, code: str) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    children.append(child)
    if "ready" in code:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"  # its signal handlers are in place
    return child


def test_stop_signals_count_and_the_second_means_now(signals: StopSignals) -> None:
    assert (signals.received, signals.now) == (0, False)
    os.kill(os.getpid(), signal.SIGHUP)
    assert (signals.received, signals.now) == (1, False)
    os.kill(os.getpid(), signal.SIGTERM)
    assert (signals.received, signals.now) == (2, True)


def test_a_child_exiting_on_its_own_ends_the_wait_with_its_code(
    signals: StopSignals, children: Children, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeper = start(children, SLEEPS)
    start(children, "import sys; sys.exit(3)")
    assert supervise(children, signals) == 3
    assert "a process exited (code 3); stopping" in said(capsys)
    stop_children(children, signals, grace_s=30)
    assert sleeper.returncode == -signal.SIGTERM  # stopped by the SIGTERM, not killed
    err = said(capsys)
    assert "killing" not in err
    assert "exited with code 3" in err  # the one that failed is named


def test_a_child_exiting_with_0_on_its_own_is_still_a_failure(
    signals: StopSignals, children: Children
) -> None:
    start(children, "pass")
    assert supervise(children, signals) == 1


def test_a_stop_signal_ends_the_wait_with_0(signals: StopSignals, children: Children) -> None:
    start(children, SLEEPS)
    os.kill(os.getpid(), signal.SIGINT)
    assert supervise(children, signals) == 0


def test_a_child_outlasting_the_grace_period_is_killed(
    signals: StopSignals, children: Children, capsys: pytest.CaptureFixture[str]
) -> None:
    stubborn = start(children, IGNORES_SIGTERM)
    polite = start(children, SLEEPS)
    began = time.monotonic()
    stop_children(children, signals, grace_s=0.5)
    assert 0.5 <= time.monotonic() - began < 10
    assert stubborn.returncode == -signal.SIGKILL
    assert polite.returncode == -signal.SIGTERM
    err = said(capsys)
    assert "handlers still running get up to 0.5 s" in err
    assert f"killing {stubborn.pid}: they did not stop in time" in err


def test_a_second_stop_signal_kills_at_once(
    signals: StopSignals, children: Children, capsys: pytest.CaptureFixture[str]
) -> None:
    stubborn = start(children, IGNORES_SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    began = time.monotonic()
    stop_children(children, signals, grace_s=60)
    assert time.monotonic() - began < 10
    assert stubborn.returncode == -signal.SIGKILL
    assert f"killing {stubborn.pid}: a second stop signal" in said(capsys)


def test_nothing_to_stop_says_nothing(
    signals: StopSignals, children: Children, capsys: pytest.CaptureFixture[str]
) -> None:
    start(children, "pass").wait()
    stop_children(children, signals, grace_s=60)
    stop_children([], signals, grace_s=60)
    assert said(capsys) == ""
