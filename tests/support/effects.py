"""Side effects: the lines handlers of tests/support/apps write and tests count.

One line ``KIND EVENT_ID ATTEMPT PID UNIX_TIME`` per effect, appended to the file named
by ``E2E_SIDE_FILE`` (O_APPEND writes of one short line are atomic across processes
and threads).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from eventstream import Event

SIDE_FILE_ENV = "E2E_SIDE_FILE"


def record(kind: str, event: Event) -> None:
    """Append one side-effect line for this try of this event."""
    path = os.environ.get(SIDE_FILE_ENV)
    if not path:
        return
    line = f"{kind} {event.id} {event.attempt} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class Effect(NamedTuple):
    """One side-effect line written by a handler of tests/support/apps."""

    kind: str
    event_id: str
    attempt: int
    pid: int
    at: float  # time.time() when it was written


def side_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    out = []
    text = path.read_bytes().decode()
    # A line still being written (read mid-append) has no newline yet: count it next time.
    for line in text[: text.rfind("\n") + 1].splitlines():
        kind, event_id, attempt, pid, at = line.split()
        out.append(Effect(kind, event_id, int(attempt), int(pid), float(at)))
    return out


def count_side_effects(path: Path, kind: str) -> Counter[str]:
    """How many times the handler wrote side effect ``kind`` for each event id."""
    return Counter(e.event_id for e in side_effects(path) if e.kind == kind)
