"""Readable failure reasons from anything a handler raises: pure functions, no I/O.

A handler may raise any ``BaseException``, with a message of a megabyte, text that
cannot be encoded (a lone surrogate from a file name that is not UTF-8), or a
``__str__`` that raises. Whatever it is, the worker must record a reason a person
can read and Redis can store, so every text here is capped and encodable.
"""

from __future__ import annotations

import traceback

REASON_LIMIT = 2_000  # characters of "Type: message" kept in the DLQ, the status and the logs
TRACEBACK_LIMIT = 8_000  # characters of traceback kept in the DLQ
PART_LIMIT = 1_000  # characters of one frame or one exception line of a traceback


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (saying how many were cut), safely encodable."""
    if len(text) > limit:
        text = f"{text[:limit]}… [{len(text) - limit} characters cut]"
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: show them as \udXXX escapes
        text = text.encode("utf-8", "backslashreplace").decode()
    return text


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException as err:  # a __str__ that raises, whatever it raises
        return f"<the exception's __str__ raised {type(err).__name__}>"


def describe(exc: BaseException) -> str:
    """``Type: message`` (or ``Type`` alone), capped at ``REASON_LIMIT``."""
    name = type(exc).__name__
    text = _message(exc)
    return clip(f"{name}: {text}" if text else name, REASON_LIMIT)


def format_traceback(exc: BaseException) -> str:
    """The traceback, its innermost parts kept: each frame or message line capped at
    ``PART_LIMIT``, the whole at ``TRACEBACK_LIMIT`` by dropping the outermost parts."""
    try:
        parts = list(traceback.TracebackException.from_exception(exc).format())
    except BaseException:  # formatting ran user code (__str__, __notes__) that raised
        return describe(exc)
    kept: list[str] = []
    size = 0
    for part in reversed(parts):
        part = clip(part, PART_LIMIT)
        if kept and size + len(part) > TRACEBACK_LIMIT:
            break
        kept.append(part)
        size += len(part)
    cut = len(parts) - len(kept)
    head = f"[{cut} outer part{'s' if cut > 1 else ''} of the traceback cut]\n" if cut else ""
    return clip(head + "".join(reversed(kept)), TRACEBACK_LIMIT + PART_LIMIT)
