"""Hostile clients against the real `eventstream api` process, over raw sockets: huge
heads, slow heads, stalled bodies, too many connections, and clients that go away
mid-body. After each, the API still serves an ordinary request."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from tests.support.processes import Api, Cluster
from tests.support.waiting import wait_for

EVENT = {"type": "T", "payload": {}}
MIB = 1024 * 1024


def dial(api: Api) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=10)


def read_until_closed(sock: socket.socket, within: float, drip: bytes | None = None) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still
    open after ``within`` seconds. ``drip``: sent every 0.2 s meanwhile, as a slow client."""
    received = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.2) if drip else left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if drip:
                try:
                    sock.sendall(drip)
                except OSError:
                    return received
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the connection is still open after {within:g} s; received {received[:300]!r}")


def read_response(reader: BinaryIO) -> bytes:
    """The next whole response (head and Content-Length body) off a kept-alive connection."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            pytest.fail(f"closed mid-response: {head!r}")
        head += line
    length = next(
        int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
    )
    body = reader.read(length)
    assert len(body) == length, f"closed mid-response: {head + body!r}"
    return head + body


def request(path: str = "/healthz", *headers: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:300]
    return int(response[9:12])


def still_serves(api: Api) -> None:
    r = httpx.post(f"{api.url}/events", json=EVENT, timeout=10)
    assert r.status_code == 202, r.text


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def error_lines(api: Api) -> list[str]:
    lines = api.proc.stderr_path.read_text(errors="replace").splitlines()
    return [
        line
        for line in lines
        if "Traceback" in line
        or (line.startswith("{") and json.loads(line).get("level") in {"error", "critical"})
    ]


# ---- head size --------------------------------------------------------------------


def test_a_head_over_the_cap_gets_431_and_a_close_and_one_under_it_is_served(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_MAX_HEAD_BYTES="8192")
    with dial(api) as sock, sock.makefile("rb") as reader:
        sock.sendall(request("/healthz", f"X-Big: {'a' * 6000}"))
        assert status_of(read_response(reader)) == 200
    with dial(api) as sock:
        sock.sendall(request("/healthz", f"X-Big: {'a' * 9000}"))
        response = read_until_closed(sock, 10)
    assert status_of(response) == 431
    assert b"connection: close" in response
    assert b"exceeds 8192 bytes" in response
    with dial(api) as sock:  # many small headers count the same
        sock.sendall(request("/healthz", *(f"X-H{i}: {'b' * 100}" for i in range(100))))
        assert status_of(read_until_closed(sock, 10)) == 431
    still_serves(api)


def test_what_follows_a_head_in_the_same_read_is_not_counted_as_head(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_MAX_HEAD_BYTES="2048")
    body = json.dumps({"type": "T", "payload": {"blob": "x" * 20_000}}).encode()
    with dial(api) as sock, sock.makefile("rb") as reader:  # a body ten times the cap, with its head
        sock.sendall(
            request(
                "/events", "Content-Type: application/json", f"Content-Length: {len(body)}", method="POST"
            )
            + body
        )
        assert status_of(read_response(reader)) == 202
        pipelined = request() * 200  # 200 small requests in one write, eight times the cap
        assert len(pipelined) > 4 * 2048
        sock.sendall(pipelined)
        assert [status_of(read_response(reader)) for _ in range(200)] == [200] * 200


def send_ignoring_errors(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        with contextlib.suppress(OSError):  # the server stops reading once it has answered
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_50_mb_headers_are_refused_early_and_leave_no_memory_behind(cluster: Cluster) -> None:
    api = cluster.start_api()  # the default cap
    for _ in range(20):
        still_serves(api)
    before = rss_bytes(api.proc.pid)
    peak = before
    done = threading.Event()

    def sample() -> None:  # the API's largest size while under attack
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, rss_bytes(api.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    huge = request("/events", "Content-Type: application/json", f"X-Big: {'a' * 50 * MIB}", method="POST")
    try:
        for _ in range(4):
            with dial(api) as sock:
                sender = send_ignoring_errors(sock, huge)
                response = read_until_closed(sock, 30)
                sender.join(30)
            assert status_of(response) == 431
    finally:
        done.set()
        sampler.join(10)
    after = rss_bytes(api.proc.pid)
    assert peak - before < 20 * MIB, f"the API grew from {before / MIB:.0f} to {peak / MIB:.0f} MiB"
    assert after - before < 20 * MIB, f"the API kept {after / MIB:.0f} MiB, from {before / MIB:.0f}"
    still_serves(api)


# ---- slow clients -----------------------------------------------------------------


def test_a_slow_head_is_answered_408_and_closed_after_the_head_timeout(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_HEAD_TIMEOUT="1")
    # slowloris: a header line every 0.2 s never makes the deadline move
    with dial(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response = read_until_closed(sock, 8, drip=b"X-Drip: a\r\n")
    assert status_of(response) == 408
    # the same on a kept-alive connection, after a first request was served
    with dial(api) as sock, sock.makefile("rb") as reader:
        sock.sendall(request())
        assert status_of(read_response(reader)) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert status_of(read_until_closed(sock, 8, drip=b"X-Drip: a\r\n")) == 408
    # a connection that sends nothing is closed, with nothing to answer
    with dial(api) as sock:
        assert read_until_closed(sock, 8) == b""
    still_serves(api)


def test_a_stalled_body_gets_408_and_a_moving_one_is_served(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_BODY_TIMEOUT="2")
    body = json.dumps(EVENT).encode()
    head = request("/events", "Content-Type: application/json", f"Content-Length: {len(body)}", method="POST")
    with dial(api) as sock:
        sock.sendall(head + body[:5])
        response = read_until_closed(sock, 10)
    assert status_of(response) == 408
    assert b"stalled" in response
    # a slow body that keeps coming, a byte every 0.1 s, is not a stalled one
    with dial(api) as sock, sock.makefile("rb") as reader:
        sock.sendall(head)
        for byte in body:
            time.sleep(0.1)
            sock.sendall(bytes([byte]))
        assert status_of(read_response(reader)) == 202
    # a body refused before it arrived (413 on its Content-Length) is not read for ever
    with dial(api) as sock:
        sock.sendall(
            request("/events", "Content-Type: application/json", "Content-Length: 10000000", method="POST")
        )
        response = read_until_closed(sock, 8, drip=b"x" * 100)
    assert status_of(response) == 413
    still_serves(api)
    assert error_lines(api) == []


def test_connections_beyond_the_limit_get_503_and_the_rest_are_served(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_MAX_CONNECTIONS="4")
    held = [dial(api) for _ in range(4)]
    try:
        for sock in held:  # served, and kept alive
            sock.sendall(request())
            with sock.makefile("rb") as reader:
                assert status_of(read_response(reader)) == 200
        with dial(api) as extra:
            extra.sendall(request())
            assert status_of(read_until_closed(extra, 10)) == 503
    finally:
        for sock in held:
            sock.close()
    still_serves(api)


# ---- clients that go away ---------------------------------------------------------


def test_a_client_gone_mid_body_is_no_error(cluster: Cluster) -> None:
    api = cluster.start_api(EVENTSTREAM_LOG_LEVEL="debug")

    def hang_up_mid_body(path: str, *headers: str) -> None:
        head = request(
            path, "Content-Type: application/json", "Content-Length: 1000", *headers, method="POST"
        )
        with dial(api) as sock:
            sock.sendall(head + b'{"type": "T", ')
            time.sleep(0.05)  # the app is waiting for the rest of the body

    def disconnects_seen(n: int) -> None:
        wait_for(
            lambda: len(api.proc.log_events("client disconnected before the request was read")) >= n,
            f"the API to notice {n} disconnects",
            10,
            last=api.proc.stderr,
        )

    for _ in range(5):  # the ingest fast path
        hang_up_mid_body("/events")
    disconnects_seen(5)
    still_serves(api)
    # a route served by FastAPI's routing (its own exception handling): POST /keys, with a key
    made = subprocess.run(
        [sys.executable, "-m", "eventstream", "keys", "create", "--name", "ops", "--scope", "admin"],
        env=cluster.env(),
        cwd=cluster.tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = made.stdout.strip()
    hang_up_mid_body("/keys", f"Authorization: Bearer {token}")
    disconnects_seen(6)
    r = httpx.post(f"{api.url}/events", json=EVENT, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 202, r.text
    assert error_lines(api) == []
