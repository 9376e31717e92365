"""Schemathesis against the API's own ``/openapi.json``: a real API process, authenticated
with a test key, a bounded number of generated cases per operation.

Every response must be no 5xx and conform to the documented schema: status code,
content type, headers and body. Schemathesis also sends negative cases (bodies and
parameters that break the schema), which must be refused with a documented 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.stack import start_api

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(90)

FUZZ_KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {FUZZ_KEY}"}
MAX_EXAMPLES = 30
CASES: dict[str, int] = {}
STATUSES: dict[int, int] = {}


# What JSON Schema cannot say (sizes summed over a whole object, nesting depth, valid
# Unicode, a field allowed for one kind of job only, a parent_job_id that names no job of
# the tenant): a schema-valid case may break one of these, and must then get a 422 naming it.
LIMITS_BEYOND_THE_SCHEMA = (
    "; the limit is ",
    "nested deeper than the limit",
    "valid Unicode",
    "stream is for chat jobs",
    "parent_job_id",
)


def positive_data_accepted_or_limit_named(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Schemathesis's ``positive_data_acceptance``, except for a 422 naming a documented
    limit the schema cannot express (SECURITY.md lists them)."""
    if response.status_code == 422:
        message = str(response.json().get("error", {}).get("message", ""))
        if any(limit in message for limit in LIMITS_BEYOND_THE_SCHEMA):
            return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture(scope="module")
def fuzz_api(stack_env: dict[str, str]) -> Iterator[str]:
    env = {
        **stack_env,
        "COURIER_API_KEYS": f"fuzz:{FUZZ_KEY}",
        # the SSRF guard has its own tests; here, no DNS lookups of generated host names
        "COURIER_CALLBACK_ALLOW_PRIVATE": "true",
    }
    proc, url = start_api(env, name="api-fuzz")
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_api: str) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_api}/openapi.json")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4's lazy schema reads ``node._nodeid``, which pytest 9 no longer sets."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    key = f"{case.operation.method.upper()} {case.operation.path}"
    CASES[key] = CASES.get(key, 0) + 1
    response = case.call_and_validate(
        headers=AUTH,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[positive_data_accepted_or_limit_named],
    )
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1


def test_fuzzing_covered_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the generated tests: each operation got cases (the count is printed)."""
    assert len(CASES) >= 8, CASES
    assert min(CASES.values()) >= 5, CASES
    assert STATUSES.get(202, 0) >= 10, STATUSES  # valid submissions were generated too
    with capsys.disabled():
        total = sum(CASES.values())
        print(f"\nschemathesis: {total} cases over {len(CASES)} operations: {CASES}")
        print(f"schemathesis: responses by status: {dict(sorted(STATUSES.items()))}")
