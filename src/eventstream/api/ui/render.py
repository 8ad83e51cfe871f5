"""Pages from Jinja2 templates, escaped by default: every value a page shows (payloads,
types, reasons, tracebacks, key names) is text, never markup."""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from eventstream.api import problems
from eventstream.api.ui.access import Visit, ui_root
from eventstream.version import __version__

STATIC = files("eventstream.api.ui") / "static"
# every file the pages load; nothing else is served from /ui/static
ASSETS = {"htmx.min.js": "text/javascript", "ui.css": "text/css", "ui.js": "text/javascript"}


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("eventstream.api.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = pretty_json
    return env


def pretty_json(value: Any) -> str:
    """A payload as indented JSON text (escaped by the template like any other text)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def page(
    request: Request, visit: Visit | None, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """A full page, or only its ``content`` block when htmx asks for a fragment."""
    root = ui_root(request)
    partitions = len(request.app.state.services.broker.partitions) if visit is not None else 1
    html = (
        environment()
        .get_template(template)
        .render(
            root=root,
            static=f"{root}/static",
            version=__version__,
            visit=visit,
            partitions=partitions,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, visit: Visit | None, exc: Exception) -> Response:
    """The page for a refusal or a failure: the API's own status, detail and headers
    (eventstream.api.problems is the one mapping), shown as a page."""
    answer = problems.response_for(exc)
    body = msgspec.json.decode(bytes(answer.body))
    response = page(
        request,
        visit,
        "error.html",
        status=answer.status_code,
        nav=None,  # base.html reads it whenever a visitor is known
        title=body.get("title", "Error"),
        detail=body.get("detail", ""),
        errors=body.get("errors") or [],
    )
    for name in ("retry-after", "ratelimit-policy", "ratelimit-limit", "ratelimit-remaining"):
        if name in answer.headers:
            response.headers[name] = answer.headers[name]
    return response


def asset(name: str) -> Response:
    """One of the dashboard's own files (shipped in the package: no CDN)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=media_type,
        headers={"cache-control": "public, max-age=86400"},  # the URL carries the version
    )
