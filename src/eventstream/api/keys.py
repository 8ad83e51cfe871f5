"""API keys over HTTP (admin scope): list, create, revoke. Each change is audited."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from starlette.responses import Response

from eventstream.api import schemas
from eventstream.api.deps import json, read_body, services
from eventstream.api.guard import principal_of
from eventstream.auth import trail
from eventstream.auth.apikeys import MAX_BURST, MAX_RATE, MIN_RATE, NAMESPACE_PATTERN, KeyRegistry
from eventstream.auth.guard import KEYS_NEED_ADMIN_KEY
from eventstream.errors import Forbidden, ValidationError

router = APIRouter(tags=["API keys"])


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _.:@/-]+$")]
    scope: Annotated[str, msgspec.Meta(pattern=r"^(ingest|read|admin)$")]
    rate: (
        Annotated[float, msgspec.Meta(ge=MIN_RATE, le=MAX_RATE, description="Events per second.")] | None
    ) = None
    burst: Annotated[int, msgspec.Meta(ge=1, le=MAX_BURST, description="Events at once.")] | None = None
    namespace: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=NAMESPACE_PATTERN,
                description="Idempotency namespace shared with every key created with the same one; "
                "without it the key has its own.",
            ),
        ]
        | None
    ) = None


class KeyItem(msgspec.Struct):
    id: str
    name: str
    scope: str
    rate: float | None
    burst: int | None
    createdAt: str
    lastUsedAt: str | None
    revoked: bool
    revokedAt: str | None
    namespace: str | None


class KeyList(msgspec.Struct):
    items: list[KeyItem]


class CreatedKey(msgspec.Struct):
    key: KeyItem
    token: Annotated[str, msgspec.Meta(description="The key itself: shown this once, never stored.")]


_, COMPONENTS = msgspec.json.schema_components(
    [NewKey, KeyList, CreatedKey], ref_template="#/components/schemas/{name}"
)
_decoder = msgspec.json.Decoder(NewKey)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: schemas.problem_response("No such key")}


def _registry(request: Request) -> KeyRegistry:
    if principal_of(request).key_id is None:  # the middleware refuses this already
        raise Forbidden(KEYS_NEED_ADMIN_KEY)
    svc = services(request)
    return KeyRegistry(svc.broker)


@router.get(
    "/keys",
    summary="Every API key (never the tokens), oldest first",
    responses={200: schemas.json_response("The keys", "KeyList")},
)
async def list_keys(request: Request) -> Response:
    keys = await _registry(request).list()
    return json({"items": [k.to_json() for k in keys]})


@router.post(
    "/keys",
    status_code=201,
    summary="Create a key; its token is in this answer only",
    openapi_extra=schemas.body("NewKey"),
    responses={201: schemas.json_response("Created", "CreatedKey")},
)
async def create_key(request: Request) -> Response:
    registry = _registry(request)
    raw = await read_body(request, 4096)
    try:
        new = _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValidationError(f"invalid key: {exc}", [{"loc": "$", "msg": str(exc)}]) from None
    except UnicodeDecodeError:
        raise ValidationError("body is not valid UTF-8 JSON") from None
    key, token = await registry.create(new.name, new.scope, new.rate, new.burst, new.namespace)
    actor_id, actor_name = principal_of(request).label
    trail.record(
        "key.created",
        target=key.id,
        outcome="ok",
        key_id=actor_id,
        key_name=actor_name,
        new_key_name=key.name,
        scope=key.scope,
        via="http",
    )
    return json({"key": key.to_json(), "token": token}, 201)


@router.delete(
    "/keys/{key_id}",
    summary="Revoke a key: refused from its next request on, by every API process",
    responses={200: schemas.json_response("The revoked key", "KeyItem"), **NOT_FOUND},
)
async def revoke_key(request: Request, key_id: str) -> Response:
    key, changed = await _registry(request).revoke(key_id)
    actor_id, actor_name = principal_of(request).label
    trail.record(
        "key.revoked",
        target=key.id,
        outcome="ok" if changed else "already revoked",
        key_id=actor_id,
        key_name=actor_name,
        revoked_key_name=key.name,
        via="http",
    )
    return json(key.to_json())
