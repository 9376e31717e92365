"""Names that reach metric labels and logs (model names, fallback models, tenant names, top-
level metadata keys) take only the safe characters: a 422 naming the rule, through the
real API; a bad tenant in COURIER_API_KEYS stops the process at start."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.support.procs import ROOT
from tests.support.stack import assert_error, chat_body

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("NUL in the model", chat_body("x", "openai:gpt-4o-mini\u0000x"), "U+0000"),
    ("newline in the model", chat_body("x", "openai:gpt-4o-mini\nx"), "U+000A"),
    ("escape in the model", chat_body("x", "openai:gpt\u001b[31m"), "U+001B"),
    ("pipe in the model", chat_body("x", "openai:a|b"), "U+007C"),
    ("quote in the model", chat_body("x", 'openai:a"b'), "U+0022"),
    ("non-ASCII in the model", chat_body("x", "openai:gpt\u2028"), "U+2028"),
    ("model starting with a dot", chat_body("x", "openai:.hidden"), "model names take"),
    (
        "control character in a fallback",
        chat_body("x", fallback_models=["anthropic:claude\u0007"]),
        "fallback_models",
    ),
    ("control character in a metadata key", chat_body("x", metadata={"a\u0000": 1}), "U+0000"),
    ("space in a metadata key", chat_body("x", metadata={"order id": 1}), "U+0020"),
    ("long metadata key", chat_body("x", metadata={"k" * 65: 1}), "its length"),
    ("control character in the provider", chat_body("x", "open\u0000ai:gpt"), "provider"),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_unsafe_names_are_refused(t1: httpx.Client, body: dict[str, Any], expected: str) -> None:
    message = assert_error(t1.post("/v1/jobs", json=body), 422, "invalid_request")
    assert expected in message
    assert "\u0000" not in message and "\u001b" not in message  # never echoed back
    if "model" in message and "refused" in message:
        assert "letters, digits and . _ - : / @" in message


def test_a_batch_names_the_job_with_the_unsafe_name(t1: httpx.Client) -> None:
    jobs = [chat_body("ok"), chat_body("bad", "openai:gpt\u0000")]
    message = assert_error(t1.post("/v1/jobs/batch", json={"jobs": jobs}), 422)
    assert "jobs.1.model" in message and "U+0000" in message


def test_real_model_names_and_free_metadata_values_are_accepted(t1: httpx.Client) -> None:
    models = [
        "openai:ft:gpt-4o-mini:my-org:custom:abc123",
        "openai:meta-llama/Llama-3.1-8B-Instruct",
        "openai:llama3.1:8b",
        "anthropic:claude-3-5-sonnet@20240620",
        "anthropic:anthropic.claude-3-5-sonnet-20240620-v1:0",
    ]
    metadata = {"order_id": 1, "trace.id": "a\nb", "ns:key/x@y-z": {"nested key ok": "\u0007"}}
    for model in models:
        response = t1.post("/v1/jobs", json=chat_body("x", model, metadata=metadata))
        assert response.status_code == 202, response.text
        t1.post(f"/v1/jobs/{response.json()['id']}/cancel")


def test_the_schema_states_the_safe_characters(api_url: str) -> None:
    schema = httpx.get(f"{api_url}/openapi.json").json()
    chat = schema["components"]["schemas"]["JobSubmission"]["anyOf"][0]["properties"]
    assert chat["model"]["pattern"].endswith(":[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
    assert chat["metadata"]["propertyNames"]["pattern"] == "^[A-Za-z0-9._:/@-]{1,64}$"


@pytest.mark.parametrize("command", ["api", "worker"])
def test_a_bad_tenant_name_stops_the_process_at_start(redis_url: str, command: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "COURIER_REDIS_URL": redis_url,
        "COURIER_API_KEYS": "good:key-one,bad\u0001tenant:secret-key-two",
    }
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "COURIER_API_KEYS pair 2: tenant name refused at character 4 (U+0001)" in done.stderr
    assert "secret-key-two" not in done.stderr


@pytest.mark.parametrize(
    "command", [["keys", "create"], ["clients", "create", "--role", "user"]], ids=["key", "client"]
)
def test_a_bad_tenant_name_is_refused_for_a_managed_key_or_client(
    redis_url: str, command: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", *command, "--tenant", "bad\u0001tenant"],
        env={"PATH": "/usr/bin:/bin", "COURIER_REDIS_URL": redis_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "tenant name refused at character 4 (U+0001)" in done.stderr
