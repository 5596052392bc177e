"""Property-based API test: schemathesis generates requests from the OpenAPI document the
server serves, valid and invalid, with a read-write and a read-only token. No answer may be a
5xx, and answers to valid requests must match the document. Bounded in examples and time so
that the whole module ends well within a minute."""

from __future__ import annotations

import importlib.util
import time

import pytest

from tests.conftest import require
from tests.server.conftest import RO_TOKEN, RW_TOKEN

pytestmark = pytest.mark.server

MAX_EXAMPLES = 120  # per generation mode and token
TIME_BUDGET_S = 60.0


@pytest.fixture
def schema(shared_server):
    require(importlib.util.find_spec("schemathesis") is not None, "schemathesis (dev extra)")
    import schemathesis

    loaded = schemathesis.openapi.from_url(
        f"{shared_server.url}/v1/openapi.json", headers={"Authorization": f"Bearer {RO_TOKEN}"}
    )
    # Seed a host and a snapshot so generated refs sometimes hit real things.
    shared_server.api("POST", "/v1/hosts", {"name": "seed"})
    shared_server.api("POST", "/v1/hosts/seed/snapshots", {"name": "seed-snap"})
    return loaded


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("token", [RW_TOKEN, RO_TOKEN], ids=["read-write", "read-only"])
def test_generated_requests_never_get_a_5xx(shared_server, schema, mode, token) -> None:
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error]
    if mode == "positive":  # valid requests: answers must also match the document
        checks += [status_code_conformance, content_type_conformance, response_schema_conformance]

    started = time.monotonic()
    seen: set[int] = set()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy(GenerationMode(mode)))
    def check(case) -> None:
        if time.monotonic() - started > TIME_BUDGET_S / 4:
            return  # stay within the budget whatever the machine's speed
        response = case.call_and_validate(
            base_url=shared_server.url,
            headers={"Authorization": f"Bearer {token}"},
            checks=checks,
            timeout=30,
        )
        seen.add(response.status_code)

    check()
    assert seen, "no request was made"
    assert all(status < 500 for status in seen), seen
    assert "Traceback" not in shared_server.log()
