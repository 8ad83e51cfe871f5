"""API keys: the token format, and creating, listing and revoking keys in Redis.

A token is ``es_<id>_<secret>``: ``<id>`` is 12 public hex digits that name the
key's record, ``<secret>`` 32 random bytes (URL-safe base64). Only the SHA-256 digest
of the whole token is stored. A salted slow hash (bcrypt, argon2) would add nothing:
the secret has 256 bits of entropy, so nobody can guess it from its digest, and a
fast digest keeps checking a key to one hash per request.

The records live in Redis (see eventstream.broker.keys), so every API process sees
a new or revoked key on its next request. Records are never deleted: a revoked key
stays listed as revoked, and the deployment stays in "keys required" mode even when
every key is revoked (revoking the last key must not open the API).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from eventstream.broker import Broker
from eventstream.errors import NotFound, ValidationError

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
TOKEN_PREFIX = "es_"
_TOKEN_RE = re.compile(r"^es_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
NAME_MAX = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9 _.:@/-]{1,64}$")
NAMESPACE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_NAMESPACE_RE = re.compile(NAMESPACE_PATTERN)
MIN_RATE = 0.001  # one event per 1000 s; slower would make the bucket's times absurd
MAX_RATE = 1_000_000.0
MAX_BURST = 10_000_000
_RATE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*s)?\s*$")


def digest(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(token: str) -> str | None:
    """The key id of a well-formed token, else None."""
    m = _TOKEN_RE.fullmatch(token)
    return m.group(1) if m else None


def parse_rate(text: str) -> float:
    """``200``, ``0.5/s`` or ``200 / s``: events per second; ValidationError otherwise."""
    m = _RATE_RE.fullmatch(text)
    if m is None:
        raise ValidationError(
            f"rate {text[:40]!r} is not events per second: write e.g. 200 or 200/s",
            [{"loc": "rate", "msg": "a number of events per second, optionally followed by /s"}],
        )
    return float(m.group(1))


def valid_id(key_id: str) -> bool:
    return bool(_ID_RE.fullmatch(key_id))


def default_burst(rate: float) -> int:
    """One second's worth of events, at least 1."""
    return max(1, math.ceil(rate))


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record (never the token)."""

    id: str
    name: str
    scope: str
    rate: float  # events per second; 0: no limit
    burst: int
    created_ms: int
    revoked_ms: int | None
    last_used_ms: int | None
    namespace: str | None = None  # shared idempotency namespace; None: the key's own

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None

    def to_json(self) -> dict[str, Any]:
        from eventstream.event import ms_to_iso

        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "rate": self.rate or None,
            "burst": self.burst if self.rate else None,
            "createdAt": ms_to_iso(self.created_ms),
            "lastUsedAt": ms_to_iso(self.last_used_ms) if self.last_used_ms else None,
            "revoked": self.revoked,
            "revokedAt": ms_to_iso(self.revoked_ms) if self.revoked_ms else None,
            "namespace": self.namespace,
        }


def _record(key_id: str, raw: dict[str, str]) -> ApiKey:
    return ApiKey(
        id=key_id,
        name=raw.get("n", ""),
        scope=raw.get("s", ""),
        rate=float(raw.get("r", 0) or 0),
        burst=int(raw.get("b", 0) or 0),
        created_ms=int(raw.get("c", 0) or 0),
        revoked_ms=int(raw["x"]) if raw.get("x") else None,
        last_used_ms=int(raw["u"]) if raw.get("u") else None,
        namespace=raw.get("ns") or None,
    )


def check_new_key(
    name: str, scope: str, rate: float | None, burst: int | None, namespace: str | None = None
) -> None:
    """Raise ValidationError saying what is wrong with a new key's settings."""
    errors: list[dict[str, str]] = []
    if namespace is not None and not _NAMESPACE_RE.fullmatch(namespace):
        errors.append({"loc": "namespace", "msg": "1-64 characters of letters, digits, '_.-'"})
    if not _NAME_RE.fullmatch(name):
        errors.append({"loc": "name", "msg": f"1-{NAME_MAX} characters of letters, digits, ' _.:@/-'"})
    if scope not in SCOPES:
        errors.append({"loc": "scope", "msg": f"one of {', '.join(SCOPES)}"})
    if rate is not None and not MIN_RATE <= rate <= MAX_RATE:  # also refuses NaN
        errors.append({"loc": "rate", "msg": f"events per second, from {MIN_RATE:g} to {MAX_RATE:g}"})
    if burst is not None and (rate is None or not 1 <= burst <= MAX_BURST):
        errors.append({"loc": "burst", "msg": f"1-{MAX_BURST} events, and only with a rate"})
    if errors:
        raise ValidationError("invalid key: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors), errors)


class KeyRegistry:
    """The API keys of one deployment (key prefix)."""

    def __init__(self, broker: Broker, new_id: Callable[[], str] | None = None) -> None:
        self.broker = broker
        self.new_id = new_id or (lambda: secrets.token_hex(6))

    async def create(
        self,
        name: str,
        scope: str,
        rate: float | None = None,
        burst: int | None = None,
        namespace: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token exists outside the client).

        ``namespace``: the idempotency namespace it shares with every key created with
        the same one (a rotation, one team's services); None: a namespace of its own."""
        check_new_key(name, scope, rate, burst, namespace)
        r = float(rate or 0)
        b = (burst or default_burst(r)) if r else 0
        for _ in range(8):
            key_id = self.new_id()
            token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            # HSETNX claims the id: an existing key with the same id is never overwritten
            if await self.broker.claim_key_id(key_id, digest(token)):
                break
        else:
            raise RuntimeError("could not find a free API key id")
        now = time.time_ns() // 1_000_000
        fields: dict[str, str | int | float] = {"s": scope, "n": name, "r": repr(r), "b": b, "c": now}
        if namespace is not None:
            fields["ns"] = namespace
        await self.broker.store_key(key_id, fields)
        return ApiKey(key_id, name, scope, r, b, now, None, None, namespace), token

    async def get(self, key_id: str) -> ApiKey:
        if not valid_id(key_id):
            raise NotFound("API key", key_id[:32])
        raw = await self.broker.key_record(key_id)
        if not raw:
            raise NotFound("API key", key_id)
        return _record(key_id, raw)

    async def list(self) -> list[ApiKey]:
        """Every key, oldest first."""
        ids = sorted(i for i in await self.broker.key_ids() if valid_id(i))
        if not ids:
            return []
        raws = await self.broker.key_records(ids)
        found = [_record(i, raw) for i, raw in zip(ids, raws, strict=True) if raw]
        return sorted(found, key=lambda k: (k.created_ms, k.id))

    async def revoke(self, key_id: str) -> tuple[ApiKey, bool]:
        """Revoke a key; (its record, whether this call revoked it). Takes effect on
        the next request of every API process: each request reads the record."""
        key = await self.get(key_id)
        if key.revoked:
            return key, False
        now = time.time_ns() // 1_000_000
        # HSETNX: two concurrent revokes keep the first time
        done = await self.broker.revoke_key(key_id, now)
        return await self.get(key_id), done

    async def any_keys(self) -> bool:
        return await self.broker.any_keys()
