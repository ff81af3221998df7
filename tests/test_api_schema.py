"""Schemathesis against the app's own OpenAPI: no server errors, no schema violations."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_api_support import ADMIN, client, device, live_server, register

# Examples per operation: with about 30 operations, 15 keep the run near ten
# seconds in CI; FIRESAFE_FUZZ_EXAMPLES=500 makes a deeper run by hand (make fuzz).
EXAMPLES_PER_OPERATION = int(os.environ.get("FIRESAFE_FUZZ_EXAMPLES", "15"))
# No shrinking: a failure is reported as found, which keeps the run short.
PHASES = (Phase.explicit, Phase.generate)


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        with client(url) as api:
            register(api, device("D1"), device("D2", site="S2"))
        yield url


@pytest.fixture(scope="module")
def openapi(api_url: str) -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json", headers=ADMIN)
    # An endless stream cannot be checked by request/response examples (see the SSE test).
    return schema.exclude(path="/api/v1/alarms/stream")


def test_openapi_conformance(openapi: schemathesis.schemas.BaseSchema) -> None:
    failures: list[str] = []
    operations = 0
    for result in openapi.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=PHASES,
        )
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            case.call_and_validate(
                headers=ADMIN,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
            )

        try:
            check()
        except Exception as exc:  # every operation is checked; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
