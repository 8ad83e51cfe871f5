"""structlog setup: readable lines in a terminal, JSON lines otherwise.

Every line has ``timestamp`` (ISO 8601, UTC), ``level`` and ``event`` (the message);
a line about one event adds ``event_id``, ``event_type`` and ``attempt``. Records of
the standard ``logging`` module (uvicorn, SQLAlchemy, ``warnings``) go through the same
renderer and add ``logger``; they are kept at ``info`` and above even when the level
is ``debug``, which adds a line per processed event.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from eventstream.broker import StreamEntry

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip

# Read by hot paths once per group of events, so per-event debug lines cost nothing
# when they are off.
debug_enabled = False


def configure(level: str = "info", fmt: str = "auto") -> None:
    global debug_enabled
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
    structlog.configure(
        processors=[*shared, *tail],
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
