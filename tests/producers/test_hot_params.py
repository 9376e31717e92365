"""A hot route reads its parameters by hand (producers/api/access/hot_params.py) and must
answer exactly as FastAPI's own parameter solving does: the same route written both ways,
fed the same bad and good requests, gives the same status and body.

In-process ASGI on purpose: this compares two readings of one request, with nothing else
to talk to (the real API's answers are tested in test_api_errors.py and test_fuzz.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from core.jobs import JobSubmission
from producers.api import errors
from producers.api.access import hot_params
from producers.api.routes.jobs import IDEMPOTENCY_KEY, WAIT, IdempotencyKey, Wait
from tests.support.stack import chat_body

app = FastAPI()
errors.install(app)


@app.post("/declared")
async def declared(submission: JobSubmission, key: IdempotencyKey = None) -> dict[str, Any]:
    return {"model": submission.model, "key": key}


@app.post("/by-hand")
async def by_hand(request: Request) -> dict[str, Any]:
    body = await hot_params.json_body(request)
    params = hot_params.Params(request)
    key = params.value(IDEMPOTENCY_KEY)
    submission = params.body(JobSubmission, body)
    params.check()
    assert submission is not None
    return {"model": submission.model, "key": key}


@app.get("/declared/{job_id}")
async def declared_get(job_id: str, wait: Wait = None) -> dict[str, Any]:
    return {"job_id": job_id, "wait": wait}


@app.get("/by-hand/{job_id}")
async def by_hand_get(request: Request, job_id: str) -> dict[str, Any]:
    params = hot_params.Params(request)
    wait = params.value(WAIT)
    params.check()
    return {"job_id": job_id, "wait": wait}


GOOD = json.dumps(chat_body("hi")).encode()
JSON = {"Content-Type": "application/json"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("good", GOOD, JSON),
    ("good with a key", GOOD, JSON | {"Idempotency-Key": "k1"}),
    ("a +json type", GOOD, {"Content-Type": "application/vnd.courier+json; charset=utf-8"}),
    ("malformed JSON", b'{"model": ', JSON),
    ("not UTF-8", b"\xff\xfe{", JSON),
    ("no content type", GOOD, {}),
    ("text/plain", GOOD, {"Content-Type": "text/plain"}),
    ("empty body", b"", JSON),
    ("an array", b"[1, 2]", JSON),
    ("a string", b'"hello"', JSON),
    ("a missing field", b'{"model": "openai:gpt-4o-mini"}', JSON),
    ("key too long", GOOD, JSON | {"Idempotency-Key": "k" * 256}),
    ("key empty", GOOD, JSON | {"Idempotency-Key": ""}),
    ("key and body bad", b'{"model": 1}', JSON | {"Idempotency-Key": "k" * 300}),
]


@pytest.mark.parametrize(("name", "content", "headers"), CASES, ids=[c[0] for c in CASES])
def test_by_hand_answers_as_fastapi(name: str, content: bytes, headers: dict[str, str]) -> None:
    with TestClient(app) as client:
        declared = client.post("/declared", content=content, headers=headers)
        by_hand = client.post("/by-hand", content=content, headers=headers)
    assert (by_hand.status_code, by_hand.json()) == (declared.status_code, declared.json())


QUERIES = ["", "?wait=5", "?wait=0.5", "?wait=abc", "?wait=", "?wait=61", "?wait=-1",
           "?wait=1&wait=70", "?other=1"]  # fmt: skip


@pytest.mark.parametrize("query", QUERIES)
def test_a_query_by_hand_answers_as_fastapi(query: str) -> None:
    with TestClient(app) as client:
        declared = client.get(f"/declared/job_1{query}")
        by_hand = client.get(f"/by-hand/job_1{query}")
    assert (by_hand.status_code, by_hand.json()) == (declared.status_code, declared.json())


def test_the_api_documents_what_fastapi_would() -> None:
    from producers.api import app as api

    declared = app.openapi()["paths"]["/declared"]["post"]
    documented = api.openapi()["paths"]["/v1/jobs"]["post"]
    assert documented["parameters"] == declared["parameters"]
    assert documented["requestBody"] == declared["requestBody"]
    declared = app.openapi()["paths"]["/declared/{job_id}"]["get"]
    documented = api.openapi()["paths"]["/v1/jobs/{job_id}"]["get"]
    assert documented["parameters"] == declared["parameters"]
