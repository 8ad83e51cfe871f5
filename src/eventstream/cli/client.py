"""The operator commands' HTTP client: the API's URL and key, and one mapping of failures to exit codes.

The operator commands (stats, dlq, events, replay) talk to the API, not to Redis, so they
go through the same keys, scopes, rate limits and audit trail as any client and work
from any machine that can reach the API. Exit codes: 0 done; 1 no such event; 2 the
API could not be reached, refused the request, or answered with an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventstream.cli.common import console
from eventstream.version import __version__

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
# A replay call may take the server's whole per-call budget (eventstream.replay.engine.MAX_REQUEST_S,
# 10 s) pacing its sends: its client waits that long and 20 s more before giving up.
REPLAY_TIMEOUT_S = 10.0 + 20.0

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url", envvar="EVENTSTREAM_API_URL", metavar="URL", help="Base URL of the EventStream API."
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="EVENTSTREAM_API_KEY",
        metavar="KEY",
        help="API key, sent as `Authorization: Bearer KEY` (needed once the API has keys).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]


class ApiError(Exception):
    """A request that did not succeed, with the message to show and the exit code to use."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return response.reason_phrase


def _field(response: httpx.Response, name: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


class ApiClient:
    """A small synchronous client of the EventStream HTTP API."""

    def __init__(self, url: str, api_key: str | None, timeout_s: float | None = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"User-Agent": f"eventstream-cli/{__version__}", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        timeout = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        not_found: str | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raise :class:`ApiError` unless the answer is a success.

        ``timeout_s`` replaces the client's timeout for this request (a replay's pacing)."""
        import httpx

        clean = {k: v for k, v in (params or {}).items() if v is not None}
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s)
        try:
            response = self._http.request(method, path, params=clean, timeout=timeout, headers=headers)
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the EventStream API at {self.url} ({type(exc).__name__}: {exc}); "
                "is it running? (--url or EVENTSTREAM_API_URL)",
                2,
            ) from None
        if response.is_success:
            return response
        status = response.status_code
        if status == 404 and not_found is not None:
            # an event that exists but is elsewhere (a replayed one retrying): the API says where
            raise ApiError(_detail(response) if _field(response, "eventStatus") else not_found, 1, status)
        if status in (401, 403):
            hint = " (pass --api-key or set EVENTSTREAM_API_KEY)" if status == 401 else ""
            raise ApiError(
                f"the API at {self.url} refused the request ({status}): {_detail(response)}{hint}",
                2,
                status,
            )
        raise ApiError(f"the API at {self.url} answered {status}: {_detail(response)}", 2, status)

    def json(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        not_found: str | None = None,
        timeout_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return self.request(method, path, params, not_found, timeout_s, headers).json()

    def replay_pages(
        self, path: str, params: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """POST a replay (/replay or /failed-events/replay) and follow ``nextCursor`` to the
        end: the API replays one rate-capped page per call. Yields each page's answer."""
        cursor: str | None = None
        while True:
            page: dict[str, Any] = self.json(
                "POST", path, {**params, "cursor": cursor}, timeout_s=REPLAY_TIMEOUT_S, headers=headers
            )
            yield page
            cursor = page.get("nextCursor")
            if not cursor:
                return


def iso(value: datetime | None) -> str | None:
    """A time for the API: a bare time on the command line is the operator's local time."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.astimezone()).isoformat()


def exit_for(error: ApiError) -> typer.Exit:
    """Print the error and return the Exit to raise."""
    console.print(f"[red]error:[/red] {error.message}", highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)
