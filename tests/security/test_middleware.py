"""The middleware's own parts: reading credentials, what a batch body costs, the route
path under a root_path, and handing the endpoint a body already read."""

from __future__ import annotations

import pytest
from starlette.types import Message

from eventstream.api.asgi import header, replay, route_path
from eventstream.api.guard import batch_cost, credentials
from eventstream.errors import Unauthorized


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([], None),
        ([(b"authorization", b"Bearer es_x")], "es_x"),
        ([(b"authorization", b"  bearer   es_x  ")], "es_x"),
        ([(b"x-api-key", b" es_y ")], "es_y"),
        ([(b"x-api-key", b"es_y"), (b"authorization", b"Bearer es_x")], "es_x"),  # Authorization wins
        ([(b"accept", b"*/*")], None),
    ],
)
def test_credentials(headers: list[tuple[bytes, bytes]], token: str | None) -> None:
    assert credentials(headers) == token


@pytest.mark.parametrize("value", [b"Basic dXNlcjpwYXNz", b"Bearer", b"Bearer   ", b"es_x"])
def test_an_authorization_header_that_is_not_bearer_is_refused(value: bytes) -> None:
    with pytest.raises(Unauthorized, match="Bearer <key>") as caught:
        credentials([(b"authorization", value), (b"x-api-key", b"es_y")])
    assert caught.value.invalid_token


@pytest.mark.parametrize(
    ("body", "cost"),
    [
        (b'{"events": [{}, {}, {}]}', 3),
        (b'{"events": []}', 1),  # refused by the endpoint anyway
        (b'{"events": [' + b"{}," * 10 + b"{}]}", 1),  # over max_batch: refused anyway
        (b"not json", 1),
        (b'{"other": 1}', 1),
    ],
)
def test_a_batch_costs_its_number_of_events(body: bytes, cost: int) -> None:
    assert batch_cost(body, max_batch=10) == cost


@pytest.mark.parametrize(
    ("path", "root_path", "route"),
    [
        ("/events", "", "/events"),
        ("/api/events", "/api", "/events"),
        ("/api", "/api", ""),
        ("/apix/events", "/api", "/apix/events"),  # not under the root path
        ("/events", "/api", "/events"),  # a server that left the root path out of path
    ],
)
def test_route_path(path: str, root_path: str, route: str) -> None:
    assert route_path({"type": "http", "path": path, "root_path": root_path}) == route


def test_header_is_the_first_value_of_a_lower_case_name() -> None:
    headers = [(b"host", b"a"), (b"origin", b"o"), (b"host", b"b")]
    assert header(headers, b"host") == b"a"
    assert header(headers, b"cookie") is None


async def test_replay_hands_over_the_body_read_then_the_real_stream() -> None:
    later: Message = {"type": "http.disconnect"}

    async def receive() -> Message:
        return later

    replayed = replay(b"body", receive)
    assert await replayed() == {"type": "http.request", "body": b"body", "more_body": False}
    assert await replayed() is later
