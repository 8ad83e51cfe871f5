"""Background sending (``enqueue``) of Client and AsyncClient against real API and worker
processes: batches from many threads, the age flush, an outage with a full buffer, a lost
reply, rejected items, close. Each test runs with both clients (the async one on a loop in
a thread of its own, so its sending task runs between the test's calls)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import structlog

from eventstream import AsyncClient, BufferFull, Client, PayloadTooLarge, Rejected, Unavailable, Undelivered
from eventstream.client.backlog import Stats
from tests.support.producers import Deployment
from tests.support.proxy import PASS, RESET, truncate
from tests.support.waiting import wait_for

T = TypeVar("T")
FAST_RETRIES = {"retry_base_s": 0.01, "retry_max_delay_s": 0.05}


class Batches:
    """The size of each batch request a client makes (retries included)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def count(self, request: httpx.Request) -> None:
        if request.url.path == "/events/batch":
            self.sizes.append(len(json.loads(request.content)["events"]))


class SyncBatches(httpx.HTTPTransport):
    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.batches.count(request)
        return super().handle_request(request)


class AsyncBatches(httpx.AsyncHTTPTransport):
    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.batches.count(request)
        return await super().handle_async_request(request)


class Background:
    """Client's or AsyncClient's background sending behind one blocking face; failures
    reported to ``on_error`` are collected in ``undelivered``."""

    def __init__(self, kind: str, url: str, api_key: str, client: dict[str, Any], **background: Any) -> None:
        self.batches = Batches()
        self.undelivered: list[Undelivered] = []
        background.setdefault("on_error", self.undelivered.extend)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sync: Client | None = None
        self.aio: AsyncClient | None = None
        if kind == "sync":
            self.sync = Client(url, api_key, transport=SyncBatches(self.batches), **client)
            self.sync.enable_background(**background)
        else:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            self.aio = AsyncClient(url, api_key, transport=AsyncBatches(self.batches), **client)
            self.aio.enable_background(**background)

    def _run(self, sync: Callable[[Client], T], aio: Callable[[AsyncClient], Coroutine[Any, Any, T]]) -> T:
        if self.sync is not None:
            return sync(self.sync)
        assert self.aio is not None
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(aio(self.aio), self._loop).result()

    def enqueue(self, type: str, payload: dict[str, Any], **kw: Any) -> str:
        return self._run(lambda c: c.enqueue(type, payload, **kw), lambda c: c.enqueue(type, payload, **kw))

    def flush(self, timeout_s: float | None = 30.0) -> None:
        self._run(lambda c: c.flush(timeout_s), lambda c: c.flush(timeout_s))

    def close(self) -> None:
        self._run(lambda c: c.close(), lambda c: c.aclose())

    def stats(self) -> Stats:
        client = self.sync or self.aio
        assert client is not None
        return client.background_stats()

    def stop(self) -> None:
        self.close()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


MakeBackground = Callable[..., Background]


@pytest.fixture(params=["sync", "async"])
def make_background(request: pytest.FixtureRequest, deployment: Deployment) -> Iterator[MakeBackground]:
    """``make_background(url=None, client={...}, **background)``: a client of the test's
    kind, by default of the module's API, with its admin key and quick retries."""
    made: list[Background] = []

    def make(url: str | None = None, client: dict[str, Any] | None = None, **background: Any) -> Background:
        options = {**FAST_RETRIES, **(client or {})}
        b = Background(request.param, url or deployment.api.url, deployment.admin_key, options, **background)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def test_events_from_many_threads_arrive_once_each_in_few_batches(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    bg = make_background(batch_size=500)
    before = deployment.received()
    keys: list[str] = []

    def produce(t: int) -> None:
        keys.extend(bg.enqueue("OK", {"t": t, "i": i}) for i in range(1000))

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bg.flush()
    assert len(set(keys)) == 5000
    assert deployment.received() == before + 5000
    assert bg.stats() == Stats(pending=0, sent=5000, failed=0)
    assert max(bg.batches.sizes) <= 500
    assert len(bg.batches.sizes) <= 40  # batches, not one request per event
    assert bg.undelivered == []


def test_a_lone_event_is_sent_when_it_has_waited_flush_interval(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    bg = make_background(flush_interval_s=0.2)
    before = deployment.received()
    bg.enqueue("OK", {"alone": True})
    wait_for(lambda: deployment.received() == before + 1, "the event sent without flush()", timeout=10)
    assert bg.batches.sizes == [1]


@pytest.mark.parametrize("on_full", ["block", "raise", "block for 0.2 s"])
def test_an_outage_fills_the_buffer_and_nothing_is_lost_when_the_server_is_back(
    deployment: Deployment, make_background: MakeBackground, on_full: str
) -> None:
    proxy = deployment.api_proxy
    bg = make_background(
        f"http://127.0.0.1:{proxy.port}",
        client={"max_attempts": 2, "retry_budget_s": 1},
        max_queue=30,
        batch_size=10,
        flush_interval_s=0.05,
        on_full="raise" if on_full == "raise" else "block",
        full_timeout_s=0.2 if on_full == "block for 0.2 s" else None,
        retry_pause_s=0.1,
    )
    before = deployment.received()
    proxy.set(RESET)
    try:
        for i in range(30):
            bg.enqueue("OK", {"i": i})
        wait_for(lambda: len(bg.batches.sizes) >= 4, "tries during the outage")  # retried, kept
        assert bg.stats().pending == 30
        if on_full != "block":
            with pytest.raises(BufferFull) as full:
                bg.enqueue("OK", {"i": 30})
            assert full.value.pending == 30
            expected = 30
        else:
            late = threading.Thread(target=bg.enqueue, args=("OK", {"i": 30}))
            late.start()
            late.join(0.5)
            assert late.is_alive()  # blocked: the buffer is full
            expected = 31
    finally:
        proxy.set(PASS)
    if on_full == "block":
        late.join(20)
        assert not late.is_alive()
    bg.flush()
    assert deployment.received() == before + expected
    assert bg.stats() == Stats(pending=0, sent=expected, failed=0)
    assert bg.undelivered == []


def test_lost_replies_are_retried_and_each_event_exists_once(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    proxy = deployment.api_proxy
    bg = make_background(
        f"http://127.0.0.1:{proxy.port}",
        client={"max_attempts": 2},
        batch_size=20,
        flush_interval_s=60,
        retry_pause_s=0.05,
    )
    before = deployment.received()
    proxy.set(truncate(0))  # the server accepts each batch; every reply is dropped
    try:
        for i in range(20):
            bg.enqueue("OK", {"i": i})
        with pytest.raises(TimeoutError, match="20 events"):
            bg.flush(0.5)  # retried by send_batch, then again after a pause, same keys
        assert len(bg.batches.sizes) >= 3
    finally:
        proxy.set(PASS)
    bg.flush()
    assert set(bg.batches.sizes) == {20}
    assert deployment.received() == before + 20
    assert bg.stats() == Stats(pending=0, sent=20, failed=0)


def test_rejected_events_go_to_on_error_and_the_others_are_delivered(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    bg = make_background(flush_interval_s=60)
    before = deployment.received()
    bg.enqueue("OK", {"n": 1})
    bad = bg.enqueue("bad type!", {"n": 2}, idempotency_key="mine-1")
    bg.enqueue("OK", {"n": 3})
    bg.flush()
    assert bad == "mine-1"
    assert deployment.received() == before + 2
    assert bg.batches.sizes == [3]
    [failed] = bg.undelivered
    assert (failed.key, failed.event["type"], failed.event["payload"]) == ("mine-1", "bad type!", {"n": 2})
    assert isinstance(failed.error, Rejected)
    assert failed.error.status == 422
    assert "type" in failed.error.detail  # the batch answer has no per-item errors list (see report)
    assert bg.stats() == Stats(pending=0, sent=2, failed=1)


def test_what_the_client_can_check_is_refused_at_enqueue(make_background: MakeBackground) -> None:
    bg = make_background(client={"max_body_bytes": 1024})
    with pytest.raises(TypeError, match="JSON"):
        bg.enqueue("OK", {"x": object()})
    with pytest.raises(PayloadTooLarge, match="1024"):
        bg.enqueue("OK", {"x": "y" * 2000})
    assert bg.stats() == Stats(0, 0, 0)


def test_close_delivers_the_buffer_then_enqueue_is_refused(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    bg = make_background(flush_interval_s=60)
    before = deployment.received()
    for i in range(7):
        bg.enqueue("OK", {"i": i})
    bg.close()
    assert deployment.received() == before + 7
    with pytest.raises(RuntimeError, match="closed"):
        bg.enqueue("OK", {"late": True})


def test_a_close_that_times_out_reports_what_is_left(
    deployment: Deployment, make_background: MakeBackground
) -> None:
    proxy = deployment.api_proxy
    bg = make_background(
        f"http://127.0.0.1:{proxy.port}",
        client={"max_attempts": 2, "retry_budget_s": 0.5},
        close_timeout_s=0.5,
        retry_pause_s=0.1,
    )
    proxy.set(RESET)
    try:
        keys = [bg.enqueue("OK", {"i": i}) for i in range(3)]
        bg.close()
    finally:
        proxy.set(PASS)
    assert sorted(f.key for f in bg.undelivered) == sorted(keys)
    assert all(isinstance(f.error, Unavailable) for f in bg.undelivered)
    assert bg.stats() == Stats(pending=0, sent=0, failed=3)


def test_without_on_error_undelivered_events_are_logged(make_background: MakeBackground) -> None:
    bg = make_background(on_error=None, flush_interval_s=60)
    with structlog.testing.capture_logs() as logs:
        key = bg.enqueue("bad type!", {})
        bg.flush()
    [entry] = [e for e in logs if e["event"] == "background_events_undelivered"]
    assert (entry["log_level"], entry["keys"], entry["count"]) == ("error", [key], 1)


EXITING = """
import sys
from eventstream import Client
client = Client(sys.argv[1], sys.argv[2]).enable_background(flush_interval_s=60)
for i in range(5):
    client.enqueue("OK", {"i": i})
"""


def test_a_sync_client_left_open_is_flushed_when_the_process_exits(deployment: Deployment) -> None:
    before = deployment.received()
    args = [sys.executable, "-c", EXITING, deployment.api.url, deployment.admin_key]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert deployment.received() == before + 5


def test_an_async_client_left_open_when_its_loop_ends_reports_its_buffer(deployment: Deployment) -> None:
    undelivered: list[Undelivered] = []

    async def main() -> str:
        client = AsyncClient(deployment.api.url, deployment.admin_key)
        client.enable_background(flush_interval_s=60, on_error=undelivered.extend)
        return await client.enqueue("OK", {"left": "open"})

    key = asyncio.run(main())
    assert [(u.key, type(u.error)) for u in undelivered] == [(key, Unavailable)]
