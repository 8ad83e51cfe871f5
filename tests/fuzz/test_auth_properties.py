"""Hypothesis properties of the security code: token parsing, the default-deny policy,
key settings, and the GCRA rate limit run in the real authorize.lua on the session's
Redis with a controlled clock (ARGV[6])."""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from eventstream.auth.apikeys import MAX_BURST, MAX_RATE, MIN_RATE, check_new_key, parse_rate, parse_token
from eventstream.auth.policy import OPEN, required_scope
from eventstream.errors import ValidationError

SETTINGS = settings(
    max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
HEX = "0123456789abcdef"
SECRET_CHARS = string.ascii_letters + string.digits + "-_"

ids = st.text(HEX, min_size=12, max_size=12)
secrets_ = st.text(SECRET_CHARS, min_size=43, max_size=43)


@SETTINGS
@given(key_id=ids, secret=secrets_)
def test_a_well_formed_token_names_its_id(key_id: str, secret: str) -> None:
    assert parse_token(f"es_{key_id}_{secret}") == key_id


@SETTINGS
@given(
    text=st.text(max_size=80)
    | st.builds(lambda i, s, x: f"es_{i}_{s}{x}", ids, secrets_, st.text(min_size=1))
)
def test_anything_else_is_no_token(text: str) -> None:
    parts = text.split("_", 2)
    well_formed = (
        len(parts) == 3
        and parts[0] == "es"
        and len(parts[1]) == 12
        and all(c in HEX for c in parts[1])
        and len(parts[2]) == 43
        and all(c in SECRET_CHARS for c in parts[2])
    )
    assert (parse_token(text) is not None) == well_formed


methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "TRACE"])
segments = st.sampled_from(["events", "batch", "keys", "admin", "healthz", "docs", "metrics", "x", ""])
paths = st.lists(segments, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s)) | st.text(max_size=30)


@SETTINGS
@given(method=methods, path=paths, public=st.booleans())
def test_the_policy_denies_by_default(method: str, path: str, public: bool) -> None:
    need = required_scope(method, path, public)
    if need is None:  # open: only reads of the listed routes
        assert method in ("GET", "HEAD")
        assert path in OPEN or (public and path == "/metrics")
    if path == "/keys" or path.startswith("/keys/") or path == "/admin" or path.startswith("/admin/"):
        assert need == "admin"
    if method not in ("GET", "HEAD") and not (method == "POST" and path in ("/events", "/events/batch")):
        assert need == "admin"
    if need == "ingest":
        assert method == "POST"


@SETTINGS
@given(rate=st.floats(allow_nan=True, allow_infinity=True), burst=st.integers(-5, MAX_BURST + 5) | st.none())
def test_key_settings_are_accepted_only_within_their_limits(rate: float, burst: int | None) -> None:
    ok = MIN_RATE <= rate <= MAX_RATE and (burst is None or 1 <= burst <= MAX_BURST)
    try:
        check_new_key("k", "read", rate, burst)
    except ValidationError:
        assert not ok
    else:
        assert ok


@SETTINGS
@given(rate=st.floats(0, 1e7, allow_nan=False), suffix=st.sampled_from(["", "/s", " /s", "/ s"]))
def test_a_rate_reads_with_or_without_per_second(rate: float, suffix: str) -> None:
    assert parse_rate(f"{rate!r}{suffix}") == rate


# --- GCRA in the real script ---------------------------------------------------


@pytest.fixture(scope="module")
def script(redis_url: str) -> Iterator[Any]:
    client = Redis.from_url(redis_url, decode_responses=True)
    source = resources.files("eventstream.broker").joinpath("authorize.lua").read_text()
    try:
        yield client.register_script(source)
    finally:
        client.close()


START_US = 10**15


@SETTINGS
@given(
    rate=st.floats(MIN_RATE, 1.0),  # intervals of 1 s or more: the key's real TTL outlives the test
    burst=st.integers(1, 20),
    steps=st.lists(st.tuples(st.integers(0, 8), st.integers(1, 25)), min_size=1, max_size=40),
)
def test_gcra_never_admits_more_than_burst_plus_rate_times_time(
    script: Any, rate: float, burst: int, steps: list[tuple[int, int]]
) -> None:
    """Over any stretch of the simulated timeline, admitted <= burst + rate * its length;
    and after a full refill (burst / rate idle) a request within the burst is admitted."""
    interval_us = 1_000_000 / rate
    bucket = f"{{gcra}}:prop:{uuid.uuid4().hex}"
    now, last_admit = START_US, None
    admitted: list[tuple[int, int]] = []
    for quarters, cost in steps:
        now += int(quarters * interval_us / 4)
        code = int(script(keys=[bucket], args=[cost, rate, burst, "", "", now])[0])
        refilled = last_admit is None or now - last_admit >= burst * interval_us + 1
        if refilled and cost <= burst:
            assert code == 3, (now, cost)
        if code == 3:
            admitted.append((now, cost))
            last_admit = now
        else:
            assert code == 4
    for i, (t0, _) in enumerate(admitted):
        total = 0
        for t1, cost in admitted[i:]:
            total += cost
            assert total <= burst + rate * (t1 - t0) / 1_000_000 + 1e-9
