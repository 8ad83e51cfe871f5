"""The checks ``up`` and ``api`` make before starting anything: which addresses count as
loopback, and a taken port refused with exit code 2 and a hint.

(The API-key rule on a public address runs on real processes in
tests/security/test_processes.py and tests/e2e/test_up.py.)"""

from __future__ import annotations

import socket

import pytest
import typer

from eventstream.cli.preflight import is_loopback, port_free_or_exit


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", ""])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_a_free_port_passes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    port_free_or_exit("127.0.0.1", port)


def test_a_taken_port_exits_2_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(typer.Exit) as stopped:
            port_free_or_exit("127.0.0.1", port)
    assert stopped.value.exit_code == 2
    said = " ".join(capsys.readouterr().err.split())
    assert f"cannot listen on 127.0.0.1:{port}" in said
    assert "choose another port with --port" in said
