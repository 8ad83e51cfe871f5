"""The audit trail: one structured log record per administrative action.

Records go to the logger ``eventstream.audit_trail`` (field ``logger``) at info level,
with ``action``, ``target``, ``outcome`` and the acting key's ``key_id`` and
``key_name`` (``anonymous`` for loopback use without keys, ``cli`` for the
``eventstream keys`` commands, which act with direct Redis access). A token is never
logged: records carry only key ids and names.
"""

from __future__ import annotations

from typing import Any

import structlog

LOGGER = "eventstream.audit_trail"


def record(action: str, *, target: str, outcome: str, key_id: str, key_name: str, **extra: Any) -> None:
    # a fresh logger each time: a cached one would miss structlog's reconfiguration
    # (logs.configure, or a test capturing records); admin actions are rare
    structlog.get_logger(LOGGER).info(
        "audit",
        logger=LOGGER,
        action=action,
        target=target,
        outcome=outcome,
        key_id=key_id,
        key_name=key_name,
        **extra,
    )
