"""Bad and odd input to the HTTP API: a 4xx with the contract's error body
(docs/contract.md, HTTP API), never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.stack import assert_error, chat_body

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("unknown provider", chat_body("x", "mistral:large"), "unknown provider"),
    ("malformed model", chat_body("x", "gpt-4o-mini"), "model"),
    ("model with spaces", chat_body("x", "openai: gpt 4"), "model"),
    ("bad priority", chat_body("x", priority="urgent"), "priority"),
    ("bad kind", chat_body("x", kind="image"), "kind"),
    ("no request", {"model": "openai:gpt-4o-mini"}, "request"),
    ("no model", {"request": {"messages": [{"role": "user", "content": "x"}]}}, "model"),
    ("empty messages", {"model": "openai:gpt-4o-mini", "request": {"messages": []}}, "messages"),
    ("bad role", chat_body("x") | {"request": {"messages": [{"role": "x", "content": "y"}]}}, ""),
    ("temperature", chat_body("x") | {"request": {"messages": [], "temperature": 9}}, ""),
    ("unknown field", chat_body("x", colour="blue"), "colour"),
    (
        "anthropic embedding",
        {"model": "anthropic:c", "kind": "embedding", "request": {"input": ["a"]}},
        "embeddings",
    ),
    ("max_attempts", chat_body("x", max_attempts=10**30), "max_attempts"),
    ("timeout_s", chat_body("x", timeout_s=-1), "timeout_s"),
    ("callback scheme", chat_body("x", callback_url="ftp://example.com/x"), "callback_url"),
    ("callback garbage", chat_body("x", callback_url="http://[::1"), "callback_url"),
    ("metadata", chat_body("x", metadata="nope"), "metadata"),
    ("array body", [1, 2], "object"),
    ("string body", "hello", "object"),
    ("null body", None, ""),
]


@pytest.mark.parametrize(("case", "body", "mentions"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_invalid_submissions_are_422(t1: httpx.Client, case: str, body: Any, mentions: str) -> None:
    message = assert_error(t1.post("/v1/jobs", json=body), 422, "invalid_request")
    assert mentions in message, message


def test_malformed_requests(t1: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    assert_error(t1.post("/v1/jobs", content=b"{not json", headers=headers), 400, "invalid_request")
    assert_error(t1.post("/v1/jobs", content=b"\xff\xfe", headers=headers), 400)
    assert t1.post(
        "/v1/jobs", content=b"model=x", headers={"Content-Type": "text/plain"}
    ).status_code in (400, 415, 422)
    big = (
        b'{"model": "openai:gpt-4o-mini", "request": {"messages": [{"role": "user", "content": "'
        + b"a" * (1024 * 1024)
        + b'"}]}}'
    )
    assert_error(t1.post("/v1/jobs", content=big, headers=headers), 413, "payload_too_large")
    chunks = iter([big[: 512 * 1024], big[512 * 1024 :]])  # streamed: no Content-Length
    assert_error(t1.post("/v1/jobs", content=chunks, headers=headers), 413, "payload_too_large")
    assert_error(t1.get("/v1/jobs/job_x", params={"wait": 61}), 422, "invalid_request")
    assert_error(t1.get("/v1/jobs/job_x", params={"wait": -1}), 422)
    assert_error(t1.get("/v1/jobs/job_x", params={"wait": "soon"}), 422)
    assert_error(t1.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
    assert_error(t1.get("/v1/jobs", params={"limit": 1001}), 422)
    message = assert_error(t1.get("/v1/jobs", params={"status": "done"}), 422)
    assert "status" in message
    long_key = {"Idempotency-Key": "k" * 256}
    assert_error(t1.post("/v1/jobs", json=chat_body("x"), headers=long_key), 422)
    assert_error(t1.get("/v1/nothing"), 404, "not_found")
    not_allowed = t1.delete("/v1/jobs")
    assert_error(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["Allow"] == "GET, HEAD, POST"
    assert_error(t1.get("/v1/jobs/job_unknown"), 404, "not_found")


def test_the_hot_routes_refuse_an_unknown_query_parameter(t1: httpx.Client) -> None:
    message = assert_error(t1.get("/v1/jobs/job_x?wiat=5"), 422, "invalid_request")
    assert "'wiat'" in message and "takes: wait" in message
    assert_error(t1.get("/v1/jobs/job_x?wait=5"), 404, "not_found")  # taken, then no job
    message = assert_error(t1.post("/v1/jobs?priority=high", json=chat_body("x")), 422)
    assert "'priority'" in message and "takes: none" in message
    message = assert_error(t1.get("/v1/jobs/job_x?wait=61"), 422, "invalid_request")
    assert message.startswith("query.wait:"), message


def test_odd_inputs_never_5xx(t1: httpx.Client) -> None:
    paths = [
        "/v1/jobs/%00",
        "/v1/jobs/" + "x" * 5000,
        "/v1/jobs/%F0%9F%92%A5",
        "/v1/jobs/a%2Fb",
        "/v1/jobs/job_x/cancel?x=1",
        "/v1/jobs?limit=1e3",
        "/v1/jobs?wait=nan",
        "/v1/jobs/job_x?wait=nan",
        "/v1/jobs/job_x?wait=inf",
        "/v1/jobs/job_x?wait=1e400",
    ]
    for path in paths:
        assert t1.get(path).status_code < 500, path
        assert t1.post(path).status_code < 500, path
    for auth in (
        b"Bearer \xe9",
        "Bearer",
        "bearer key-one",
        "Bearer key-one extra",
        "x" * 9000,
    ):
        response = t1.get("/v1/jobs", headers={"Authorization": auth})
        assert response.status_code < 500, auth
    weird = [
        {"model": None, "request": None},
        {
            "model": "openai:x",
            "request": {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "fallback_models": ["a:b"],
        },
        {"model": "openai:" + "x" * 300, "request": {}},
    ]
    for body in weird:
        assert t1.post("/v1/jobs", json=body).status_code in (202, 422)
