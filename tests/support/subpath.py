"""A reverse proxy that serves an API under a sub-path, as nginx's
``location /es/ { proxy_pass http://api/; }`` does: it strips the prefix, passes the
rest on, and hands back the answer (status, headers, body) untouched."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventstream.embedded import free_port

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@contextmanager
def sub_path_proxy(upstream: str, prefix: str) -> Iterator[str]:
    """The proxy's base URL (``http://127.0.0.1:<port><prefix>``) while it runs."""
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=upstream, timeout=30.0) as client:
            clients.append(client)
            yield

    async def forward(request: Request) -> Response:
        [client] = clients
        rest = request.url.path.removeprefix(prefix) or "/"
        headers = [(k, v) for k, v in request.headers.items() if k not in ("host", "content-length")]
        answer = await client.request(
            request.method, rest, params=request.query_params, headers=headers, content=await request.body()
        )
        kept = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in HOP]
        response = Response(answer.content, status_code=answer.status_code)
        response.raw_headers = [*response.raw_headers, *((k.encode(), v.encode()) for k, v in kept)]
        return response

    app = Starlette(
        routes=[Route(prefix + "/{path:path}", forward, methods=["GET", "POST", "DELETE"])], lifespan=lifespan
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="asyncio")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the sub-path proxy did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}{prefix}"
    finally:
        server.should_exit = True
        thread.join(10)
