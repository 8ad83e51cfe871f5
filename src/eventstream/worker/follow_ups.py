"""The worker's side of follow-ups (Event.emit): their limits, and their staging.

A returned try's follow-ups are staged in Redis (``{p}:emits``, see
eventstream.broker.emits) before the parent's store row is written; a redelivery that
finds the row completes the parent with what was staged.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from eventstream import event
from eventstream.event import FollowUp, FollowUpLimits, decode_envelope
from eventstream.settings import Settings


def configure(settings: Settings) -> None:
    """Hold follow-ups to ``settings``' ingest limits (a worker calls this at start)."""
    event.follow_up_limits = FollowUpLimits(
        settings.max_depth,
        settings.max_object_keys,
        settings.max_string_length,
        settings.max_body_bytes,
        settings.max_batch,
    )


# A JSON list of [id, ordering key or null, envelope].
_staged = msgspec.json.Decoder(list[tuple[str, str | None, str]])


def stage(follow_ups: Sequence[FollowUp]) -> str:
    """What ``{p}:emits`` holds for a parent: its follow-ups' ids, keys and envelopes."""
    return msgspec.json.encode([(f.id, f.ordering_key, f.envelope.decode()) for f in follow_ups]).decode()


def unstage(blob: str) -> tuple[FollowUp, ...]:
    """The follow-ups ``stage`` wrote (type and payload read back from the envelopes)."""
    out = []
    for follow_up_id, key, envelope in _staged.decode(blob):
        env = decode_envelope(envelope)
        out.append(FollowUp(follow_up_id, env.type, env.payload, key, envelope.encode()))
    return tuple(out)
