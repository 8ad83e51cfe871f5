"""Property test of the repeated-key check of ingest: any JSON text, written with any
spacing and escapes, is refused for a repeated key exactly when one of its objects
repeats a key, and otherwise decodes as it would without the check."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstream.errors import ValidationError
from eventstream.incoming import parse_event

SETTINGS = settings(
    max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


class Obj(list[tuple[str, Any]]):
    """A JSON object as the pairs it is written with (a key may repeat)."""


keys = st.sampled_from(["a", "b", "é", ":", '"', "a:", "\\", " "]) | st.text(max_size=4)
scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=6)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(keys, inner), max_size=4).map(Obj),
    max_leaves=10,
)
spacing = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


def write(value: Any, space: str, ascii_only: bool) -> str:
    if isinstance(value, Obj):
        pairs = [
            f"{json.dumps(k, ensure_ascii=ascii_only)}{space}:{space}{write(v, space, ascii_only)}"
            for k, v in value
        ]
        return "{" + f",{space}".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(write(v, space, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def repeats(value: Any) -> bool:
    if isinstance(value, Obj):
        names = [k for k, _ in value]
        return len(set(names)) < len(names) or any(repeats(v) for _, v in value)
    if isinstance(value, list):
        return any(repeats(v) for v in value)
    return False


@SETTINGS
@given(
    payload=st.lists(st.tuples(keys, values), max_size=5).map(Obj),
    source=st.none() | st.just("s"),
    space=spacing,
    ascii_only=st.booleans(),
    null_source=st.booleans(),
)
def test_refused_exactly_when_an_object_repeats_a_key(
    payload: Obj, source: str | None, space: str, ascii_only: bool, null_source: bool
) -> None:
    top = Obj([("type", "T"), ("payload", payload)])
    if source is not None or null_source:
        top.append(("source", source))
    raw = write(top, space, ascii_only).encode()
    if repeats(payload):
        with pytest.raises(ValidationError, match="duplicate key"):
            parse_event(raw, 64)
    else:
        assert parse_event(raw, 64).payload == json.loads(raw)["payload"]
