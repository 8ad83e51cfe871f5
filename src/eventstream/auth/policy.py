"""Which scope each request needs: a default-deny table.

    open (no key)   GET/HEAD /, /healthz, /readyz, /openapi.json, /docs, /redoc and the
                    files they load (DOCS_ASSETS), and /metrics with
                    EVENTSTREAM_METRICS_PUBLIC=true
    the dashboard   /ui and below: no API key header there; the dashboard checks its
                    session cookie itself, against the same keys and with the same
                    scopes: read to look, admin to act (eventstream.api.ui.access)
    ingest          POST /events, POST /events/batch
    admin           anything under /admin or /keys (/keys: never anonymously)
    read            any other GET or HEAD
    admin           everything else (replay, delete, any route not listed here)

A key with scope ``admin`` may do everything; ``read`` and ``ingest`` only their own.
"""

from __future__ import annotations

INGEST_BATCH = "/events/batch"
# Swagger UI's and ReDoc's files, served by the API itself (eventstream.api.docs)
DOCS_ASSETS = frozenset(
    {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/redoc.standalone.js", "/docs/favicon.png"}
)
OPEN = frozenset(
    {"/", "/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", *DOCS_ASSETS}
)
INGEST = frozenset({"/events", INGEST_BATCH})
INGEST_SCOPE = "ingest"  # what POST /events and /events/batch need
KEYS_TREE = "/keys"
UI_TREE = "/ui"
ADMIN_TREES = ("/admin", KEYS_TREE)
READ_METHODS = frozenset({"GET", "HEAD"})


def required_scope(method: str, path: str, metrics_public: bool = False) -> str | None:
    """``None`` for an open route (or the dashboard's, which checks its own), else the
    scope the request needs."""
    if method in READ_METHODS and (path in OPEN or (metrics_public and path == "/metrics")):
        return None
    if under(path, UI_TREE):
        return None
    if method == "POST" and path in INGEST:
        return INGEST_SCOPE
    if any(under(path, t) for t in ADMIN_TREES):
        return "admin"
    if method in READ_METHODS:
        return "read"
    return "admin"


def under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def manages_keys(path: str) -> bool:
    """Key management: needs a real admin key, even where anonymous use is allowed."""
    return under(path, KEYS_TREE)
