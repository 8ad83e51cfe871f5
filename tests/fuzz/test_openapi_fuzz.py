"""Schemathesis against the /openapi.json a real `eventstream api` process serves.

Every operation is fuzzed with a bounded number of examples and a fixed seed
(``derandomize``), once without a key (everything but the open routes must be a
documented 401) and once with a valid admin key, with valid and invalid data. The
checks: no 5xx, and status code, content type, headers and body all as documented.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from eventstream.embedded import free_port
from tests.support.processes import Cluster

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 25


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL of a real API process, an admin token made with `eventstream keys create`)."""
    cluster = Cluster(redis_url, f"f{uuid.uuid4().hex[:12]}", tmp_path_factory.mktemp("fuzz"))
    try:
        made = subprocess.run(
            [sys.executable, "-m", "eventstream", "keys", "create", "--name", "fuzz", "--scope", "admin"],
            env=cluster.env(), cwd=cluster.tmp_path, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        port = free_port()
        proc = cluster.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(port)], cluster.env())
        cluster.wait_ready(proc, port)
        yield f"http://127.0.0.1:{port}", made.stdout.strip()
        assert cluster.stop(proc) == 0
    finally:
        cluster.cleanup()


def fuzz(base_url: str, headers: dict[str, str], modes: list[schemathesis.GenerationMode]) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an invalid schema fails loudly here
        for mode in modes:

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                seen.setdefault(case.operation.label, set()).add(response.status_code)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                run()
            except Unsatisfiable:
                pass  # negative mode on an operation without inputs: nothing invalid to send
            except Exception as exc:  # collect every operation's failure, then report all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert seen, "no operations were fuzzed"
    return failures


def test_without_a_key_everything_is_documented_and_nothing_is_a_5xx(served: tuple[str, str]) -> None:
    base_url, _ = served
    failures = fuzz(base_url, {}, [schemathesis.GenerationMode.POSITIVE])
    assert failures == []


def test_with_an_admin_key_everything_is_documented_and_nothing_is_a_5xx(served: tuple[str, str]) -> None:
    base_url, token = served
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    failures = fuzz(base_url, {"Authorization": f"Bearer {token}"}, modes)
    assert failures == []


def test_the_document_declares_the_security_schemes(served: tuple[str, str]) -> None:
    base_url, _ = served
    doc = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    post = doc["paths"]["/events"]["post"]
    assert post["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"401", "403", "413", "422", "429", "503"} <= set(post["responses"])
    assert doc["paths"]["/healthz"]["get"]["security"] == []
