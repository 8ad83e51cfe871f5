"""Response hardening and the security part of the OpenAPI document.

- ``SecurityHeaders``: the outermost middleware. Adds standard security headers to
  every response (401/429/500 included; the dashboard's pages get a CSP of their own,
  which allows the server's own scripts and styles and nothing inline) and turns an
  unexpected exception into a plain 500 problem (logged, never with a traceback or an address in the body).
- ``install_cors``: CORS stays closed unless EVENTSTREAM_CORS_ORIGINS is set.
- ``document``: security schemes, and the 401/403/413/422/429/503 answers every
  operation can give, so the document describes what the API really does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstream.api import problems, schemas
from eventstream.api.asgi import route_path
from eventstream.auth.policy import UI_TREE, required_scope, under

DOCS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
NO_REFERRER = [(b"referrer-policy", b"no-referrer")]
API_ONLY = [
    *NO_REFERRER,
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The dashboard: its own scripts, styles and forms only; no inline code, no other site.
# Its forms need their Origin: under no-referrer a browser sends "Origin: null" with a
# POST, which the anonymous checks refuse; same-origin still tells no other site.
UI_ONLY = [
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
RATE_HEADERS = ["RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


def headers_for(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers of an answer on ``path``."""
    if path in DOCS:  # the docs page loads Swagger UI's script and styles: no CSP there
        return COMMON + NO_REFERRER
    if under(path, UI_TREE):
        return COMMON + UI_ONLY
    return COMMON + API_ONLY


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(route_path(scope))
        started = False

        async def send_secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_secured)
        except Exception as exc:
            if started:
                raise
            await problems.response_for(exc)(scope, receive, send_secured)


def cors_origins(origins: str) -> list[str]:
    """The origins EVENTSTREAM_CORS_ORIGINS allows (none: CORS stays closed)."""
    return [o.strip() for o in origins.split(",") if o.strip()]


def install_cors(app: FastAPI, origins: str) -> None:
    allowed = cors_origins(origins)
    if not allowed:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
        expose_headers=["Retry-After", *RATE_HEADERS],
        allow_credentials=False,
        max_age=600,
    )


SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `eventstream keys create`: `Authorization: Bearer es_...`.",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "The same key."},
}


def _rate_headers() -> dict[str, Any]:
    """``RateLimit-Policy: <burst>;w=<seconds to refill>``; the others are integers."""
    return {
        name: {"schema": {"type": "string" if name == "RateLimit-Policy" else "integer"}}
        for name in RATE_HEADERS
    }


def document(doc: dict[str, Any], metrics_public: bool) -> dict[str, Any]:
    """Add security schemes and the security answers to every operation of ``doc``."""
    doc.setdefault("components", {}).setdefault("securitySchemes", {}).update(SCHEMES)
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete", "head"):
                continue
            need = required_scope(method.upper(), path, metrics_public)
            responses: dict[str, Any] = op.setdefault("responses", {})
            if "422" in responses:  # FastAPI's default is not what we send
                responses["422"] = schemas.problem_response("Invalid request")
            if path != "/healthz":
                responses.setdefault(
                    "503", schemas.problem_response("Redis or the store unreachable or slow; retry later")
                )
            if need is None:
                op["security"] = []
                continue
            op["security"] = [{"bearer": []}, {"apiKey": []}]
            scope_text = f"Needs an API key with scope `{need}`" + ("" if need == "admin" else " or `admin`")
            op["description"] = (op.get("description", "") + f"\n\n{scope_text}.").strip()
            responses.setdefault(
                "401",
                schemas.problem_response("No API key, or an unknown or revoked one")
                | {"headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
            )
            responses.setdefault("403", schemas.problem_response("The key's scope does not allow this"))
            responses.setdefault(
                "429",
                schemas.problem_response("Rate limit exceeded; nothing was done")
                | {"headers": {"Retry-After": {"schema": {"type": "integer"}}, **_rate_headers()}},
            )
            if method in ("post", "put", "patch") and "requestBody" in op:
                responses.setdefault("413", schemas.problem_response("Body too large"))
                responses.setdefault("422", schemas.problem_response("Invalid request"))
    return doc
