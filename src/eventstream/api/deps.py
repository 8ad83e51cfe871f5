"""What every route needs: the services built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from eventstream.api.asgi import header
from eventstream.broker import Broker
from eventstream.errors import PayloadTooLarge, ValidationError
from eventstream.ingest.accept import GroupCommit, Publication
from eventstream.ingest.backpressure import Backpressure
from eventstream.settings import Settings
from eventstream.store import SqlStore

if TYPE_CHECKING:
    from eventstream.ingest.tracing import IngestTracing


@dataclass
class Services:
    settings: Settings
    broker: Broker
    store: SqlStore
    ingest: GroupCommit
    backpressure: Backpressure  # ingest routes check it before enqueuing
    tracing: IngestTracing | None = None  # set only when EVENTSTREAM_TRACING is on

    def publication(self, request: Request, name: str, count: int = 1) -> Publication:
        """How this request's events are submitted: in a publish span when tracing is on
        and the request carries a trace context, else straight to the group commit."""
        if self.tracing is None:
            return self.ingest
        return self.tracing.start(request.headers, name, count) or self.ingest


def services(request: Request) -> Services:
    svc: Services = request.scope["app"].state.services
    return svc


def request_header(request: Request, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as Starlette's ``request.headers``
    gives it (latin-1), without building that mapping: this runs on every ingest request."""
    value = header(request.scope["headers"], name)
    return None if value is None else value.decode("latin-1")


class _Json(Response):
    """A JSON answer with no headers of its own, made without Starlette's header
    building (the same two headers, in its order): every ingest answer is one."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = msgspec.json.encode(content)
    if headers is None:
        return _Json(body, status)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (ClientDisconnect
    when the client goes away before it is complete). Read from the ASGI messages
    themselves: this runs on every ingest request."""
    declared = header(request.scope["headers"], b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ValidationError("Content-Length header is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body is {int(declared)} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    if not body:
        raise ValidationError("request body is empty: send a JSON object")
    return body
