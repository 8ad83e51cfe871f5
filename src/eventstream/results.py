"""What a producer is told about the events it sent: the same types from every way in
(``Client``, ``AsyncClient``, ``EventStream.publish``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server holds the event. ``event_id`` names it; when ``duplicate`` is true the
    event was sent before (same idempotency key, same content) and ``event_id`` is the
    first one's: nothing was queued twice."""

    event_id: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """One item of a batch that was not accepted (nothing of it was queued): its position
    in the list sent, the HTTP status it stands for (422 invalid or its idempotency key
    used for another event, 413 too large), and why. ``errors`` lists what is wrong by
    location (``{"loc": "$.type", "msg": ...}``) when the server said."""

    index: int
    status: int
    detail: str
    errors: tuple[dict[str, str], ...] = field(default=())
