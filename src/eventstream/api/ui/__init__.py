"""The web dashboard, served by the API at /ui: the same keys and scopes, its files
shipped in the package (no CDN), server-rendered pages (Jinja2) made live with htmx.

- access.py  who is looking (session cookie, the API's keys and scopes) and CSRF
- render.py  templates (escaped by default), error pages, the static files
- routes.py  sign-in, sign-out, files, and the checks every page passes (``guarded``)
- ops.py     the operator's pages: overview (live tiles, the chart), retries, workers, partitions
- chart.py   the overview's chart, drawn as SVG on the server
- events.py  the Events pages: the list, find by id, one event
- dlq.py     the dead letters and their actions
"""

from __future__ import annotations

from fastapi import FastAPI

from eventstream.api.ui import dlq, events, ops, routes


def install(app: FastAPI) -> None:
    routes.install(
        app,
        {
            "": (ops.overview, ["GET"]),
            "/overview/figures": (ops.overview_figures, ["GET"]),
            "/overview/chart": (ops.chart, ["GET"]),
            "/events": (events.events_page, ["GET"]),
            "/events/find": (events.find, ["GET"]),  # before /events/{event_id}
            "/events/{event_id}": (events.event_page, ["GET"]),
            "/retries": (ops.retries, ["GET"]),
            "/workers": (ops.workers, ["GET"]),
            "/partitions": (ops.partitions, ["GET"]),
            **dlq.PAGES,
        },
    )
