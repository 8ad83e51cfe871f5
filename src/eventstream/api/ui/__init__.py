"""The web dashboard, served by the API at /ui: the same keys and scopes, its files
shipped in the package (no CDN), server-rendered pages (Jinja2) made live with htmx.

- access.py  who is looking (session cookie, the API's keys and scopes) and CSRF
- render.py  templates (escaped by default), error pages, the static files
- routes.py  sign-in, sign-out, files, and the checks every page passes (``guarded``)
- pages.py   the pages
- dlq.py     the dead letters and their actions
"""

from __future__ import annotations

from fastapi import FastAPI

from eventstream.api.ui import dlq, pages, routes


def install(app: FastAPI) -> None:
    routes.install(
        app,
        {
            "": (pages.overview, ["GET"]),
            **dlq.PAGES,
        },
    )
