"""The web dashboard, served by the API at /ui: the same keys and scopes, its files
shipped in the package (no CDN), server-rendered pages (Jinja2) made live with htmx.

- access.py  who is looking (session cookie, the API's keys and scopes) and CSRF
- render.py  templates (escaped by default), error pages, the static files
- routes.py  sign-in, sign-out, files, and the checks every page passes (``guarded``)
- pages.py   the pages
- events.py  the Events pages: the list, find by id, one event
"""

from __future__ import annotations

from fastapi import FastAPI

from eventstream.api.ui import events, pages, routes


def install(app: FastAPI) -> None:
    routes.install(
        app,
        {
            "": (pages.overview, ["GET"]),
            "/overview/chart": (pages.chart, ["GET"]),
            "/events": (events.events_page, ["GET"]),
            "/events/find": (events.find, ["GET"]),  # before /events/{event_id}
            "/events/{event_id}": (events.event_page, ["GET"]),
        },
    )
