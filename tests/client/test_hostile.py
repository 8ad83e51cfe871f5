"""Answers the EventStream API never gives, from a small local HTTP server: each is a
clear UnexpectedResponse (or the error its status stands for), never a KeyError or a hang."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from eventstream import Accepted, Unavailable, UnexpectedResponse
from tests.support.producers import MakeProducer

Answer = tuple[int, str, bytes]


class Hostile(ThreadingHTTPServer):
    answer: Answer = (200, "application/json", b"{}")
    extra_headers: dict[str, str] = {}
    silent_s = 0.0  # wait this long before answering


class Handler(BaseHTTPRequestHandler):
    server: Hostile

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        time.sleep(self.server.silent_s)
        status, kind, body = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for k, v in self.server.extra_headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    server = Hostile(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def url(hostile: Hostile) -> Iterator[str]:
    yield f"http://127.0.0.1:{hostile.server_address[1]}"
    hostile.extra_headers = {}
    hostile.silent_s = 0.0


HTML = "text/html"
JSON = "application/json"


@pytest.mark.parametrize(
    ("answer", "says", "problem"),
    [
        ((202, HTML, b"<html>hello</html>"), "not a JSON object", {}),
        ((202, JSON, b"[1, 2]"), "not a JSON object", {}),
        ((202, JSON, b'{"message": "ok"}'), "no eventId", {"message": "ok"}),
        ((202, JSON, b'{"eventId": 7}'), "no eventId", {"eventId": 7}),
        ((200, JSON, b"[" * 100_000), "not a JSON object", {}),
        ((418, "text/plain", b"I'm a teapot"), "418", {}),
        ((418, "application/problem+json", b'{"detail": "teapot"}'), "418", {"detail": "teapot"}),
        ((301, HTML, b"moved"), "301", {}),
    ],
)
def test_a_send_answered_strangely_is_an_unexpected_response(
    hostile: Hostile,
    url: str,
    make_producer: MakeProducer,
    answer: Answer,
    says: str,
    problem: dict[str, Any],
) -> None:
    hostile.answer = answer
    producer = make_producer(url, api_key="k")
    with pytest.raises(UnexpectedResponse, match=says) as caught:
        producer.send("OK", {})
    assert caught.value.status == answer[0]
    assert caught.value.problem == problem
    assert producer.requests == ["POST /events"]


def test_other_calls_answered_strangely(hostile: Hostile, url: str, make_producer: MakeProducer) -> None:
    producer = make_producer(url, api_key="k")
    hostile.answer = (200, JSON, b'{"results": [{"status": 202, "eventId": "a"}]}')
    with pytest.raises(UnexpectedResponse, match="results"):
        producer.send_batch([{"type": "OK", "payload": {}}] * 2)
    hostile.answer = (200, JSON, b'{"results": [{"status": "202"}]}')
    with pytest.raises(UnexpectedResponse, match="no status"):
        producer.send_batch([{"type": "OK", "payload": {}}])
    hostile.answer = (200, JSON, b'{"items": [], "nextCursor": 5}')
    with pytest.raises(UnexpectedResponse, match="nextCursor"):
        producer.failed()
    hostile.answer = (200, JSON, b'"event"')
    with pytest.raises(UnexpectedResponse):
        producer.get("x")


def test_a_server_error_page_is_unavailable_after_the_retries(
    hostile: Hostile, url: str, make_producer: MakeProducer
) -> None:
    hostile.answer = (502, HTML, b"<html>bad gateway</html>")
    hostile.extra_headers = {"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}  # a date in the past: no wait
    producer = make_producer(url, api_key="k", max_attempts=3, retry_base_s=0.01)
    with pytest.raises(Unavailable, match="bad gateway") as caught:
        producer.send("OK", {})
    assert caught.value.status == 502
    assert len(producer.requests) == 3


def test_a_generated_key_hides_the_duplicate_only_on_a_retry(
    hostile: Hostile, url: str, make_producer: MakeProducer
) -> None:
    hostile.answer = (200, JSON, b'{"eventId": "e1", "duplicate": true}')
    producer = make_producer(url, api_key="k")
    assert producer.send("OK", {}) == Accepted("e1", duplicate=True)  # a first try: the server's word


def test_a_body_that_does_not_decode_is_an_unexpected_response(
    hostile: Hostile, url: str, make_producer: MakeProducer
) -> None:
    hostile.answer = (202, JSON, b"this is not gzip")
    hostile.extra_headers = {"Content-Encoding": "gzip"}
    producer = make_producer(url, api_key="k")
    with pytest.raises(UnexpectedResponse, match="unreadable") as caught:
        producer.send("OK", {})
    assert caught.value.status == 0
    assert producer.requests == ["POST /events"]


def test_a_server_that_never_answers_is_unavailable_after_the_retries(
    hostile: Hostile, url: str, make_producer: MakeProducer
) -> None:
    hostile.answer = (202, JSON, b'{"eventId": "late"}')
    hostile.silent_s = 2.0
    producer = make_producer(url, api_key="k", timeout_s=0.2, max_attempts=2, retry_base_s=0.01)
    with pytest.raises(Unavailable, match="ReadTimeout") as caught:
        producer.send("OK", {})
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(producer.requests) == 2
