"""How the HTTP server writes answers (eventstream.api.server): uvicorn's protocol, with
the connection's transport counted, on a real socket. A whole answer leaves in one
write; a streamed one sends its head before its first chunk is ready; an answer that
closes the connection is written out before the close."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from eventstream.api.server import protocol_class
from eventstream.settings import Settings
from tests.support.waiting import wait_until

BODY = b'{"message":"Event accepted and queued"}'


class Counted:
    """The connection's transport, with each write kept."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class Server:
    def __init__(self) -> None:
        self.connections: list[Counted] = []
        self.release = asyncio.Event()  # lets the streamed answer's chunk go
        self.port = 0


async def plain(request: Request) -> Response:
    await request.body()
    return Response(BODY, status_code=202, media_type="application/json")


async def closing(request: Request) -> Response:
    return Response(BODY, headers={"Connection": "close"})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Server]:
    server = Server()

    async def streamed(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b""  # the head goes with an empty first message
            await server.release.wait()
            yield b"chunk"

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/plain", plain, methods=["POST"]), Route("/stream", streamed),
                            Route("/closing", closing)])  # fmt: skip
    base = protocol_class(Settings())

    class CountingProtocol(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:
            counted = Counted(transport)
            server.connections.append(counted)
            super().connection_made(counted)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server.port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=CountingProtocol, lifespan="off", log_level="warning")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    await wait_until(lambda: uv.started, within=10, what="the server to start")
    try:
        yield server
    finally:
        uv.should_exit = True
        await task


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))  # fmt: skip
    return head, await reader.readexactly(length)


def request(method: str, path: str, body: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_a_whole_answer_leaves_in_one_write_request_after_request() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        for i in range(3):
            writer.write(request("POST", "/plain", b'{"n": %d}' % i))
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 202 ")
            assert body == BODY
        writer.close()
        [connection] = server.connections
        assert len(connection.writes) == 3, connection.writes
        for written in connection.writes:
            assert written.startswith(b"HTTP/1.1 202 ")
            assert written.endswith(b"\r\n\r\n" + BODY)


async def test_a_streamed_answer_sends_its_head_before_its_first_chunk_is_ready() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request("GET", "/stream"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # the chunk is held back
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"transfer-encoding: chunked" in head
        server.release.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"5\r\nchunk\r\n0\r\n\r\n"
        writer.close()
        [connection] = server.connections
        assert connection.writes[0] == head


async def test_an_answer_that_closes_the_connection_is_written_before_the_close() -> None:
    async with serving() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request("GET", "/closing"))
        head, body = await read_response(reader)
        assert b"connection: close" in head.lower()
        assert body == BODY
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
        writer.close()
        [connection] = server.connections
        assert connection.writes == [head + body]
