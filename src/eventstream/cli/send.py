"""``eventstream send``: one event, or a JSON Lines file of them in batches, through the API.

A producer on the command line, on ``eventstream.Client``: the same retries and
idempotency as any client, and the URL and key options of the operator commands
(:mod:`eventstream.cli.client`). How a bulk load names its lines, so that a re-run
sends nothing twice, is in :mod:`eventstream.cli.loading`.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from eventstream.cli.client import DEFAULT_URL, KeyOpt, UrlOpt
from eventstream.cli.common import Command, cli, console

if TYPE_CHECKING:
    from eventstream.cli.loading import Reject, Source, Tally
    from eventstream.client import Client
    from eventstream.errors import EventStreamError

out = Console(highlight=False)

# Client's max_batch default, written out so that help needs no httpx (tests/cli/test_send.py checks it).
DEFAULT_BATCH = 1000
SHOWN_REJECTS = 20  # printed on stderr when no rejects file is written


def _opt(metavar: str, help: str) -> Any:
    return typer.Option(metavar=metavar, help=help, show_default=False)


@cli.command(cls=Command)
def send(
    type_: Annotated[
        str | None,
        typer.Argument(
            metavar="TYPE", help="The event's type (one event; not with --file).", show_default=False
        ),
    ] = None,
    payload: Annotated[
        str,
        typer.Option(metavar="JSON", help="The event's payload: a JSON object; @FILE reads it from FILE."),
    ] = "{}",
    ordering_key: Annotated[
        str | None, _opt("KEY", "Events with one ordering key are handled one at a time, in order.")
    ] = None,
    source: Annotated[str | None, _opt("SOURCE", "The event's source.")] = None,
    severity: Annotated[str | None, _opt("SEVERITY", "The event's severity.")] = None,
    timestamp: Annotated[str | None, _opt("TIME", "When it happened: ISO 8601 with a time zone.")] = None,
    idempotency_key: Annotated[
        str | None,
        _opt("KEY", "Send it again under this key and it is a duplicate (within the dedupe window)."),
    ] = None,
    file: Annotated[
        str | None,
        _opt("FILE", "Send every line of FILE (JSON Lines, one POST /events body a line; - for stdin)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, metavar="N", help="Lines per request (with --file).")] = (
        DEFAULT_BATCH
    ),
    key_prefix: Annotated[
        str | None,
        _opt(
            "PREFIX",
            "Name the load: a line without an id is sent under the key PREFIX:<line number> "
            "(default: from the file's content; from each line's content and number on stdin).",
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            show_default="FILE.rejected.jsonl; none for stdin",
            help="Where the rejected lines go, one JSON line each (line, text, status, reason, errors).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Print the result as JSON: {"eventId", "duplicate"} (one event), the summary (a file).',
        ),
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Send one event (TYPE --payload JSON), or every line of a JSON Lines file (--file FILE).

    A file is sent in batches, with a summary at the end: lines read, accepted,
    duplicates, rejected (each rejected line, with its reason, in the rejects file).
    Sending the same file again is safe: a line without an id is sent under a key made
    from the file's content and the line's number, so what got through before comes back
    as a duplicate. Exit code: 0 every line accepted (or a duplicate); 1 some lines
    rejected; 2 the API could not be reached or refused the request (the summary says
    how far it got: send the file again); 130 interrupted.
    """
    if (type_ is None) == (file is None):
        _usage("give an event TYPE, or --file FILE (not both)")
    from eventstream.client import Client

    try:
        client = Client(url, api_key, max_batch=batch_size)
    except ValueError as exc:
        _usage(f"--url: {exc}")
    with client:
        if type_ is not None:
            bulk = {"--key-prefix": key_prefix, "--rejects": rejects,
                    "--batch-size": None if batch_size == DEFAULT_BATCH else batch_size}  # fmt: skip
            if given := [name for name, value in bulk.items() if value is not None]:
                _usage(f"{', '.join(given)}: for --file")
            _send_one(client, type_, _payload(payload), as_json,
                      ordering_key=ordering_key, source=source, severity=severity,
                      timestamp=timestamp, idempotency_key=idempotency_key)  # fmt: skip
        else:
            assert file is not None
            fields = {"--ordering-key": ordering_key, "--source": source, "--severity": severity,
                      "--timestamp": timestamp, "--idempotency-key": idempotency_key}  # fmt: skip
            given = [name for name, value in fields.items() if value is not None]
            if given or payload != "{}":
                _usage(f"{', '.join(given) or '--payload'}: for one event; with --file each line says it")
            _send_file(client, file, batch_size, key_prefix, rejects, as_json)


def _usage(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _payload(text: str) -> dict[str, Any]:
    import json

    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _usage(f"--payload {text}: {exc}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        _usage(f"--payload is not JSON: {exc}")
    if not isinstance(value, dict):
        _usage(f"--payload must be a JSON object, not {type(value).__name__}")
    return value


def _refusal(exc: EventStreamError, url: str) -> str:
    """What the person is told when the API could not be reached or refused the request."""
    from eventstream.errors import Unauthorized, ValidationError

    status = getattr(exc, "status", 0)
    if status == 0:
        return f"{exc}; is it running? (--url or EVENTSTREAM_API_URL)"
    hint = " (pass --api-key or set EVENTSTREAM_API_KEY)" if isinstance(exc, Unauthorized) else ""
    message = f"the API at {url} refused the request ({status}): {exc}{hint}"
    if isinstance(exc, ValidationError):
        message += "".join(f"\n  {e.get('loc', '?')}: {e.get('msg', '')}" for e in exc.errors)
    return message


def _fail(exc: EventStreamError, url: str) -> NoReturn:
    _usage(_refusal(exc, url))


def _send_one(client: Client, type_: str, payload: dict[str, Any], as_json: bool, **options: Any) -> None:
    import json

    from eventstream.errors import EventStreamError

    try:
        accepted = client.send(type_, payload, **options)
    except EventStreamError as exc:
        _fail(exc, client.base_url)
    if as_json:
        typer.echo(json.dumps({"eventId": accepted.event_id, "duplicate": accepted.duplicate}))
    elif accepted.duplicate:
        typer.echo(f"{accepted.event_id} (a duplicate: sent before under this key, nothing queued twice)")
    else:
        typer.echo(f"{accepted.event_id} accepted")


# ---- a file ----------------------------------------------------------------------------


def _send_file(
    client: Client, name: str, batch_size: int, key_prefix: str | None, rejects: Path | None, as_json: bool
) -> None:
    from eventstream.cli import loading
    from eventstream.errors import EventStreamError

    if key_prefix is not None and (why := loading.check_key_prefix(key_prefix)):
        _usage(f"--key-prefix {why}")
    rejects = rejects or loading.default_rejects(name)
    with ExitStack() as stack:
        stream: IO[bytes] = sys.stdin.buffer if name == "-" else stack.enter_context(_open(name))
        if rejects is not None and _same_file(rejects, stream):
            _usage(f"--rejects {rejects} is the input itself")
        src = loading.Source(name, stream, key_prefix)
        tally = loading.Tally()
        sink = _RejectSink(rejects)
        stack.callback(sink.close)
        progress = _Progress(src, tally)
        stack.enter_context(progress)
        try:
            loading.load(client, src, batch_size, tally, sink.write, progress.update)
        except EventStreamError as exc:
            progress.stop()
            console.print(
                f"[red]error:[/red] {_refusal(exc, client.base_url)}", highlight=False, soft_wrap=True
            )
            _summary(src, tally, sink, as_json, complete=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            progress.stop()
            _summary(src, tally, sink, as_json, complete=False)
            raise typer.Exit(130) from None
        progress.stop()
        _summary(src, tally, sink, as_json, complete=True)
    if tally.rejected:
        raise typer.Exit(1)


def _open(name: str) -> IO[bytes]:
    try:
        return open(name, "rb")  # closed by the caller's ExitStack
    except OSError as exc:
        _usage(f"--file {name}: {exc.strerror or exc}")


def _same_file(path: Path, stream: IO[bytes]) -> bool:
    import os

    try:
        mine, theirs = os.stat(path), os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


class _RejectSink:
    """The rejects file, made fresh on each run at the first rejected line; else the
    first rejected lines on stderr. A rejects file left by an earlier run is removed when
    this run rejects nothing: its presence always means the last run rejected lines."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None
        if path is not None:
            path.unlink(missing_ok=True)

    def write(self, reject: Reject) -> None:
        self.count += 1
        if self.path is None:
            if self.count <= SHOWN_REJECTS:
                console.print(f"line {reject.line}: rejected: {reject.reason}", highlight=False, markup=False)
            return
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(reject.to_json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Progress:
    """A progress bar on a terminal (bytes of a regular file; lines of a stream); nothing otherwise."""

    def __init__(self, src: Source, tally: Tally) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.tally = tally
        self.start = time.monotonic()
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[lines]}"),
            TimeElapsedColumn(),
            console=out,
            transient=True,
            disable=not out.is_terminal,
        )
        self.task = self.bar.add_task(src.name if src.name != "-" else "stdin", total=src.size, lines="")
        self._stopped = False

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def update(self) -> None:
        t = self.tally
        rate = t.read / max(time.monotonic() - self.start, 1e-6)
        lines = (
            f"{t.read} lines, {rate:,.0f} lines/s, {t.accepted} accepted, "
            f"{t.duplicates} duplicates, {t.rejected} rejected"
        )
        self.bar.update(self.task, completed=t.bytes_read, lines=lines)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.bar.stop()


def _summary(src: Source, tally: Tally, sink: _RejectSink, as_json: bool, complete: bool) -> None:
    import json

    where = str(sink.path) if sink.path is not None and sink.count else None
    if not complete:
        console.print(
            "sending the same input again is safe: what got through comes back as duplicates",
            highlight=False,
        )
    if as_json:
        body = {**tally.as_dict(), "complete": complete, "lastLine": tally.last_line, "rejectsFile": where,
                "keys": src.keyed_by}  # fmt: skip
        typer.echo(json.dumps(body, ensure_ascii=False))
        return
    label = "stdin" if src.name == "-" else src.name
    counts = (
        f"{tally.read} line(s) read, {tally.accepted} accepted, {tally.duplicates} duplicate(s), "
        f"{tally.rejected} rejected"
    )
    if where is not None:
        counts += f" (reasons in {where})"
    elif sink.count > SHOWN_REJECTS:
        counts += f" (the first {SHOWN_REJECTS} above; --rejects FILE keeps them all)"
    if complete:
        typer.echo(f"sent {label}: {counts}")
    else:
        unsure = (
            f"; {tally.unconfirmed} unconfirmed (in or not: sending again settles it)"
            if tally.unconfirmed
            else ""
        )
        typer.echo(f"stopped at line {tally.last_line} of {label}: {counts}{unsure}")
