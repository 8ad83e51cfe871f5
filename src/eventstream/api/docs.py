"""The API's documentation pages, served without a CDN: /docs (Swagger UI), /redoc, and /.

Swagger UI's and ReDoc's files come from the ``fastapi-offline`` package, which ships them;
the API serves each one itself (``eventstream.auth.policy.DOCS_ASSETS``, open like the pages),
so the pages work behind a firewall or offline. ``GET /`` leads a person to the
dashboard (/ui), which links to these pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import PurePosixPath

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, RedirectResponse, Response

from eventstream.auth.policy import DOCS_ASSETS

ASSETS = files("fastapi_offline") / "static"
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
CACHE = "public, max-age=86400"  # the files change only with the package


def install(app: FastAPI) -> None:
    """Add /, /docs, /docs/oauth2-redirect, /redoc and their files to ``app``
    (made with ``docs_url=None, redoc_url=None``)."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def home(request: Request) -> Response:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/ui")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/favicon.png",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/docs/redoc.standalone.js",
            redoc_favicon_url=f"{root}/docs/favicon.png",
            with_google_fonts=False,
        )

    # plain routes, as FastAPI's own docs pages are: not API operations
    app.add_route("/", home, include_in_schema=False)
    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    for path in sorted(DOCS_ASSETS):
        app.add_route(path, _asset(PurePosixPath(path).name), include_in_schema=False)


def _asset(name: str) -> Callable[[Request], Awaitable[Response]]:
    body = (ASSETS / name).read_bytes()  # read once: a few MB, every one of them served often
    media_type = MEDIA_TYPES[PurePosixPath(name).suffix]

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers={"Cache-Control": CACHE})

    return serve
