"""Shapes of request and response bodies, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

import msgspec

from eventstream.ingest import IncomingEvent


class BatchBody(msgspec.Struct):
    events: list[IncomingEvent]


class AcceptedBody(msgspec.Struct):
    message: str
    eventId: str
    duplicate: bool


class BatchItem(msgspec.Struct, omit_defaults=True):
    index: int
    status: int
    eventId: str | None = None
    duplicate: bool | None = None
    error: str | None = None


class BatchResult(msgspec.Struct):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItem]


class Problem(msgspec.Struct):
    type: str
    title: str
    status: int
    detail: str


_TYPES = [IncomingEvent, BatchBody, AcceptedBody, BatchResult, Problem]
_, COMPONENTS = msgspec.json.schema_components(_TYPES, ref_template="#/components/schemas/{name}")


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(name: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(name)}}}}


def json_response(description: str, name: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(name)}}}


def problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }
