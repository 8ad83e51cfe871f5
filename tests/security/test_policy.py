"""The default-deny policy as a table, and the same cases through HTTP."""

from __future__ import annotations

import pytest

from eventstream.auth.policy import required_scope
from tests.support.asgi import Api, assert_problem
from tests.support.auth import NewKey, bearer

TABLE = [
    ("GET", "/healthz", None), ("HEAD", "/readyz", None), ("GET", "/openapi.json", None),
    ("GET", "/docs", None), ("GET", "/docs/oauth2-redirect", None), ("GET", "/redoc", None),
    ("GET", "/metrics", "read"), ("POST", "/healthz", "admin"),
    ("POST", "/events", "ingest"), ("POST", "/events/batch", "ingest"), ("PUT", "/events", "admin"),
    ("GET", "/events", "read"), ("HEAD", "/events", "read"), ("GET", "/events/x", "read"),
    ("GET", "/keys", "admin"), ("GET", "/keys/", "admin"), ("HEAD", "/keys", "admin"),
    ("GET", "/keys/abc", "admin"), ("GET", "/keysx", "read"), ("GET", "/admin", "admin"),
    ("GET", "/admin/audit", "admin"), ("OPTIONS", "/events", "admin"), ("OPTIONS", "/healthz", "admin"),
    ("get", "/events", "admin"), ("post", "/events", "admin"), ("head", "/healthz", "admin"),
    ("DELETE", "/failed-events/x", "admin"), ("POST", "/failed-events/replay", "admin"),
    ("GET", "/no-such-route", "read"), ("PATCH", "/no-such-route", "admin"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "need"), TABLE)
def test_required_scope(method: str, path: str, need: str | None) -> None:
    assert required_scope(method, path) == need


def test_metrics_can_be_opened() -> None:
    assert required_scope("GET", "/metrics", metrics_public=True) is None
    assert required_scope("POST", "/metrics", metrics_public=True) == "admin"


@pytest.mark.parametrize(
    ("method", "url"),
    [("GET", "/keys/"), ("HEAD", "/keys"), ("GET", "/ke%79s"), ("OPTIONS", "/events")],
)
async def test_a_read_key_is_refused_what_needs_admin(
    api: Api, new_key: NewKey, method: str, url: str
) -> None:
    token = await new_key("read")
    r = await api.client.request(method, url, headers=bearer(token))
    assert r.status_code == 403, r.text
    if method != "HEAD":
        assert_problem(r, 403, "admin")
