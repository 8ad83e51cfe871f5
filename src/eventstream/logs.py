"""structlog setup: readable lines in a terminal, JSON lines otherwise.

Every line has ``timestamp`` (ISO 8601, UTC), ``level`` and ``event`` (the message);
a line about one event adds ``event_id``, ``event_type`` and ``attempt``. Records of
the standard ``logging`` module (uvicorn, SQLAlchemy, ``warnings``) go through the same
renderer and add ``logger``; they are kept at ``info`` and above even when the level
is ``debug``, which adds a line per processed event.

Logging never raises on a broken output: when stderr is a pipe whose reader has gone
(``eventstream up | tee`` after Ctrl-C), a full disk or a closed file, the failed write
and every later one go to ``os.devnull`` instead (:class:`SafeStream`), so a process
always reaches its own clean stop.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

import structlog

if TYPE_CHECKING:
    from eventstream.broker import StreamEntry

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip

# Read by hot paths once per group of events, so per-event debug lines cost nothing
# when they are off.
debug_enabled = False


class OutputClosed(BaseException):
    """The reader of stdout went away (``eventstream dlq list | head``): a normal end for a command.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    reports it as a failure; ``eventstream.cli.main`` turns it into exit code 0."""


class SafeStream(io.TextIOBase):
    """A text stream whose writes never raise: after the first failure, output goes to os.devnull.

    The stream's file descriptor is pointed at os.devnull too, so that the interpreter's
    final flush at exit, and anything holding the original stream, cannot fail either.
    With ``end_on_broken_pipe`` (a command's stdout), a write to a pipe whose reader has
    gone then raises :class:`OutputClosed`, once, to end the command.
    """

    def __init__(self, stream: IO[str], end_on_broken_pipe: bool = False) -> None:
        super().__init__()
        self._stream = stream
        self.end_on_broken_pipe = end_on_broken_pipe
        self.failed = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self.failed:
            try:
                self._stream.write(text)
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                self._fall_back(exc)
        return len(text)

    def flush(self) -> None:
        if not self.failed:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self._fall_back(exc)

    def _fall_back(self, exc: BaseException) -> None:
        self.failed = True
        self._to_devnull()
        if self.end_on_broken_pipe and isinstance(exc, BrokenPipeError):
            raise OutputClosed from None

    def _to_devnull(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass


def safe(stream: TextIO) -> TextIO:
    """``stream`` wrapped in a :class:`SafeStream` (once)."""
    return stream if isinstance(stream, SafeStream) else cast(TextIO, SafeStream(stream))


def protect_output() -> None:
    """Make this process's stdout and stderr never raise (long-running processes: up, api, worker).

    A handler's ``print`` or a log line then cannot fail because the terminal, the pipe
    or the disk behind it went away."""
    sys.stdout = safe(sys.stdout)
    sys.stderr = safe(sys.stderr)
    if isinstance(sys.stdout, SafeStream):
        sys.stdout.end_on_broken_pipe = False


def configure(level: str = "info", fmt: str = "auto", audit_file: Path | None = None) -> None:
    """Set up structlog and the standard ``logging`` module; see the module docstring.

    ``audit_file``: when stderr is a terminal, the audit trail's records are appended to
    this file as JSON lines instead of being shown (a command run by a person prints its
    result; the trail goes to the log)."""
    global debug_enabled
    sys.stderr = safe(sys.stderr)
    tty = sys.stderr.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # JSON: a traceback is one string field; the console renderer prints it itself.
    tail: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, _lead, structlog.processors.JSONRenderer()]
        if use_json
        else [
            structlog.dev.ConsoleRenderer(
                colors=tty,
                # Rich's default shows every frame's local variables: an API key among them
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
            )
        ]
    )
    to_file: list[structlog.typing.Processor] = [_AuditToFile(audit_file)] if audit_file and tty else []
    structlog.configure(
        processors=[*shared, *to_file, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    # Other libraries' debug lines (every SQL statement, every socket operation) bury ours.
    root.setLevel(max(LEVELS[level], logging.INFO))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." on every start
    logging.captureWarnings(True)
    debug_enabled = LEVELS[level] <= logging.DEBUG


AUDIT_LOGGER = "eventstream.audit_trail"  # eventstream.auth.trail.LOGGER (auth sits above logs)
AUDIT_FILE = "audit.log"  # in the data dir: the audit trail of commands run at a terminal


class _AuditToFile:
    """Append the audit trail's records to a file as JSON lines, and drop them from the output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.render = structlog.processors.JSONRenderer()

    def __call__(
        self, logger: Any, method: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        if event_dict.get("logger") != AUDIT_LOGGER:
            return event_dict
        line = str(self.render(logger, method, _lead(logger, method, dict(event_dict))))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"{line}\n")
        except OSError:
            return event_dict  # the file cannot be written: the record is shown after all
        raise structlog.DropEvent


def _lead(logger: Any, method: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """``timestamp``, ``level`` and ``event`` first: JSON lines a person can scan too."""
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    head.update(event_dict)
    return head


def entry_fields(entry: StreamEntry) -> dict[str, Any]:
    """``event_id``, ``event_type`` and ``attempt`` (the try about to run) of a delivery.

    Decodes the envelope: for the rare lines (reclaims, lost leases), not per event.
    """
    from eventstream.event import decode_envelope

    try:
        event_type = decode_envelope(entry.envelope).type
    except Exception:  # a malformed envelope still gets its line
        event_type = ""
    return {"event_id": entry.event_id, "event_type": event_type, "attempt": entry.attempts + 1}
