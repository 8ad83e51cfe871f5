"""The web dashboard, served by the API at /ui: the same keys and scopes, its files
shipped in the package (no CDN), server-rendered pages (Jinja2) made live with htmx.

- access.py  who is looking (session cookie, the API's keys and scopes) and CSRF
- render.py  templates (escaped by default), error pages, the static files
- routes.py  sign-in, sign-out, files, and the checks every page passes (``guarded``)
- ops.py     the operator's pages: overview (live tiles), retries, workers, partitions
"""

from __future__ import annotations

from fastapi import FastAPI

from eventstream.api.ui import ops, routes


def install(app: FastAPI) -> None:
    routes.install(
        app,
        {
            "": (ops.overview, ["GET"]),
            "/overview/figures": (ops.overview_figures, ["GET"]),
            "/retries": (ops.retries, ["GET"]),
            "/workers": (ops.workers, ["GET"]),
            "/partitions": (ops.partitions, ["GET"]),
        },
    )
