"""The bulk load behind ``eventstream send --file``: JSON Lines in, batches out, a tally.

Nothing here prints: :mod:`eventstream.cli.send` draws the progress and the summary.

Idempotency keys. Each line is sent with its own ``id`` when it has one; otherwise its
``id`` is made from the load's identity and the line's number, so that sending the same
input again (after an interruption, or by mistake) sends nothing twice: what got through
before comes back as a duplicate.

- a regular file: the SHA-256 of its content (read once before sending): the same file
  sent again, even renamed or moved, sends nothing twice; a file whose content changed
  in any way is a new load;
- stdin (or a pipe, a FIFO): nothing can be read ahead, so the SHA-256 of the line's own
  content and its number: the same stream piped again sends nothing twice, an edited
  line is a new event; two different streams with an identical line at the same number
  make one event of the two;
- ``--key-prefix P``: ``P:<line number>``, whatever the content: the user names the load.

Memory holds one batch of lines at a time, and a line is read at most
``MAX_LINE_BYTES`` at a time: a longer one is rejected without being kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgspec

from eventstream.results import Rejected

if TYPE_CHECKING:
    from eventstream.client import Client

# A line longer than the largest request body the client sends cannot be sent anyway.
MAX_LINE_BYTES = 1_048_576
KEY_MAX = 256  # the API's limit on an idempotency key (eventstream.ingest.accept.KEY_MAX)
DIGEST_CHARS = 32  # 128 bits of SHA-256, hex


@dataclass(slots=True)
class Tally:
    """What a load did so far. ``unconfirmed``: lines handed to a request whose answer
    never came (they may or may not be in: sending the input again settles it)."""

    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    unconfirmed: int = 0
    last_line: int = 0
    bytes_read: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "unconfirmed": self.unconfirmed,
        }


@dataclass(slots=True)
class Reject:
    """A line that was not accepted: its number, its text, the HTTP status it stands for
    (None: refused here, never sent), why, and what is wrong by location."""

    line: int
    text: str
    status: int | None
    reason: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        record = {
            "line": self.line,
            "text": self.text,
            "status": self.status,
            "reason": self.reason,
            "errors": self.errors,
        }
        return json.dumps(record, ensure_ascii=False)


class Source:
    """The input, opened: its lines (number, raw bytes), and how each line's key is made."""

    def __init__(self, name: str, stream: IO[bytes], key_prefix: str | None) -> None:
        self.name = name
        self.stream = stream
        self.size: int | None = None
        self._prefix = key_prefix
        self._digest: str | None = None
        if key_prefix is None and _is_regular(stream):
            self.size = os.fstat(stream.fileno()).st_size
            digest = hashlib.sha256()
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
            self._digest = digest.hexdigest()[:DIGEST_CHARS]
            stream.seek(0)

    @property
    def keyed_by(self) -> str:
        """How keys are made, in words."""
        if self._prefix is not None:
            return f"key prefix {self._prefix!r}"
        if self._digest is not None:
            return f"file content sha256:{self._digest}"
        return "each line's content and number"

    def key(self, number: int, line: bytes) -> str:
        if self._prefix is not None:
            return f"{self._prefix}:{number}"
        if self._digest is not None:
            return f"{self._digest}:{number}"
        content = hashlib.sha256(b"%d\n%s" % (number, line)).hexdigest()
        return f"{content[:DIGEST_CHARS]}:{number}"

    def lines(self) -> Iterator[tuple[int, bytes | None, int]]:
        """(number, the line without its end, or None when too long, bytes consumed)."""
        number = 0
        while True:
            raw = self.stream.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            consumed = len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest, never holding it
                    raw = self.stream.readline(MAX_LINE_BYTES)
                    consumed += len(raw)
                yield number, None, consumed
                continue
            yield number, raw.rstrip(b"\r\n"), consumed


def _is_regular(stream: IO[bytes]) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def check_key_prefix(prefix: str) -> str | None:
    """Why ``prefix`` cannot make keys, or None when it can."""
    longest = KEY_MAX - len(":") - 10  # room for a line number up to 10 digits
    if not prefix or len(prefix) > longest or "\x00" in prefix:
        return f"must be 1-{longest} characters, without NUL"
    return None


def parse(number: int, line: bytes | None, source: Source) -> dict[str, Any] | Reject:
    """The line as an event body with its ``id`` (the line's own, else the load's key),
    or why it cannot be sent."""
    if line is None:
        return Reject(number, "", None, f"the line is longer than {MAX_LINE_BYTES} bytes")
    try:
        body = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return Reject(number, _text(line), None, f"not JSON: {exc}")
    if not isinstance(body, dict):
        return Reject(number, _text(line), None, f"not a JSON object but a {_json_kind(body)}")
    if body.get("id") is None:
        body["id"] = source.key(number, line)
    return body


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def load(
    client: Client,
    source: Source,
    batch_size: int,
    tally: Tally,
    on_reject: Callable[[Reject], None],
    on_batch: Callable[[], None],
) -> None:
    """Send every line of ``source`` in batches of ``batch_size``, counting in ``tally``.

    Raises what ``Client.send_batch`` raises when a batch could not be sent (the API
    unreachable, a key refused); the lines of that batch are then ``unconfirmed``."""
    bodies: list[dict[str, Any]] = []
    numbers: list[int] = []
    texts: list[bytes] = []

    def flush() -> None:
        tally.unconfirmed = len(bodies)
        results = client.send_batch(bodies)
        tally.unconfirmed = 0
        for number, text, result in zip(numbers, texts, results, strict=True):
            if isinstance(result, Rejected):
                tally.rejected += 1
                on_reject(Reject(number, _text(text), result.status, result.detail, list(result.errors)))
            elif result.duplicate:
                tally.duplicates += 1
            else:
                tally.accepted += 1
        bodies.clear()
        numbers.clear()
        texts.clear()
        on_batch()

    for number, line, consumed in source.lines():
        tally.last_line = number
        tally.bytes_read += consumed
        if line is not None and not line.strip():
            continue
        tally.read += 1
        parsed = parse(number, line, source)
        if isinstance(parsed, Reject):
            tally.rejected += 1
            on_reject(parsed)
            continue
        bodies.append(parsed)
        numbers.append(number)
        texts.append(line or b"")
        if len(bodies) >= batch_size:
            flush()
    if bodies:
        flush()


def default_rejects(name: str) -> Path | None:
    """``<input>.rejected.jsonl`` beside a named input; None for stdin."""
    return None if name == "-" else Path(f"{name}.rejected.jsonl")
