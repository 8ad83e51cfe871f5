"""Property tests of ingest validation against a real `eventstream api` process:
any event that validates is stored exactly as sent; anything invalid is a 4xx
problem and enqueues nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstream.embedded import free_port
from tests.support.processes import Cluster

SETTINGS = settings(
    max_examples=40, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
MAX_KEYS, MAX_STRING, MAX_DEPTH = 8, 40, 4

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=MAX_STRING)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=10), json_values, max_size=MAX_KEYS)
types = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


@pytest.fixture(scope="module")
def client(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    cluster = Cluster(redis_url, f"p{uuid.uuid4().hex[:12]}", tmp_path_factory.mktemp("props"))
    env = cluster.env(
        EVENTSTREAM_MAX_OBJECT_KEYS=str(MAX_KEYS),
        EVENTSTREAM_MAX_STRING_LENGTH=str(MAX_STRING),
        EVENTSTREAM_MAX_DEPTH=str(MAX_DEPTH),
    )
    try:
        port = free_port()
        proc = cluster.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], env)
        cluster.wait_ready(proc, port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            yield c
        assert cluster.stop(proc) == 0
    finally:
        cluster.cleanup()


def received(client: httpx.Client) -> int:
    return int(client.get("/metrics", headers={"Accept": "application/json"}).json()["received"])


@SETTINGS
@given(type_=types, payload=payloads.filter(lambda p: depth(p) <= MAX_DEPTH))
def test_a_valid_event_is_stored_exactly(client: httpx.Client, type_: str, payload: dict[str, Any]) -> None:
    r = client.post("/events", json={"type": type_, "payload": payload})
    assert r.status_code == 202, r.text
    got = client.get(f"/events/{r.json()['eventId']}").json()
    assert (got["type"], got["payload"]) == (type_, payload)


invalid_bodies = st.one_of(
    st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")),
    st.builds(
        lambda t: {"type": t, "payload": {}},
        st.text(max_size=200).filter(
            lambda t: (
                not t or not all(c.isascii() and (c.isalnum() or c in "_.:-") for c in t) or len(t) > 128
            )
        ),
    ),
    st.builds(lambda p: {"type": "T", "payload": p}, st.one_of(scalars, st.lists(scalars))),
    st.builds(
        lambda k: {"type": "T", "payload": {}, k: 1},
        st.text(min_size=1, max_size=10).filter(
            lambda k: k not in {"type", "payload", "source", "severity", "timestamp", "id"}
        ),
    ),
    st.builds(
        lambda n: {"type": "T", "payload": {str(i): i for i in range(n)}}, st.integers(MAX_KEYS + 1, 50)
    ),
    st.builds(lambda s: {"type": "T", "payload": {"s": s}}, st.text(min_size=MAX_STRING + 1, max_size=80)),
    st.builds(
        lambda d: {"type": "T", "payload": d},
        json_values.filter(lambda v: depth(v) > MAX_DEPTH).map(lambda v: {"x": v}),
    ),
)


@SETTINGS
@given(body=invalid_bodies)
def test_an_invalid_event_is_a_4xx_and_enqueues_nothing(client: httpx.Client, body: Any) -> None:
    before = received(client)
    if isinstance(body, bytes):
        r = client.post("/events", content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post("/events", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["detail"]
    assert received(client) == before


@SETTINGS
@given(payload=payloads)
def test_a_payload_is_refused_only_when_nested_too_deeply(
    client: httpx.Client, payload: dict[str, Any]
) -> None:
    r = client.post("/events", json={"type": "T", "payload": payload})
    if depth(payload) > MAX_DEPTH:
        assert r.status_code == 422, r.text
    else:
        assert r.status_code == 202, r.text


def widest(v: Any) -> int:
    """The most keys of any object in ``v``."""
    if isinstance(v, dict):
        return max([len(v), *(widest(x) for x in v.values())])
    if isinstance(v, list):
        return max((widest(x) for x in v), default=0)
    return 0


def longest(v: Any) -> int:
    """The longest string in ``v``, object keys included."""
    if isinstance(v, str):
        return len(v)
    if isinstance(v, dict):
        return max((max(len(k), longest(x)) for k, x in v.items()), default=0)
    if isinstance(v, list):
        return max((longest(x) for x in v), default=0)
    return 0


wide_values = st.recursive(
    st.integers(0, 9) | st.text(max_size=2 * MAX_STRING),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=2 * MAX_STRING), inner, max_size=2 * MAX_KEYS)
    ),
    max_leaves=30,
)


@SETTINGS
@given(payload=st.dictionaries(st.text(max_size=2 * MAX_STRING), wide_values, max_size=2 * MAX_KEYS))
def test_a_payload_is_refused_only_when_too_wide_or_a_string_too_long(
    client: httpx.Client, payload: dict[str, Any]
) -> None:
    r = client.post("/events", json={"type": "T", "payload": payload})
    if depth(payload) > MAX_DEPTH:
        assert r.status_code == 422, r.text
    elif widest(payload) > MAX_KEYS or longest(payload) > MAX_STRING:
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    else:
        assert r.status_code == 202, r.text
