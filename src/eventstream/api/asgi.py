"""The few ASGI helpers our middlewares share, on plain ASGI scopes and callables."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope


def route_path(scope: Scope) -> str:
    """The path the routes match: ``path`` without the ``root_path`` an ASGI server
    mounted the app under (Starlette's routing does the same)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the endpoint the body already read, then the real stream."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
