"""The HTTP API end to end: real API and worker processes, real Redis, the simulator."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
import redis

from core import keys
from tests.support.procs import Proc, free_port, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    KEY1,
    assert_error,
    chat_body,
    paused,
    stack_env_for,
    start_api,
    unique,
    wait_job,
)

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)


def calls_with(sim: SimulatorHandle, text: str) -> list[dict[str, Any]]:
    return [e for e in sim.log() if text in (e.get("prompt") or "")]


def queue_depth(api_url: str, queue: str) -> int:
    text = httpx.get(f"{api_url}/metrics").text
    found = re.search(rf'^courier_queue_depth{{queue="{re.escape(queue)}"}} (\S+)$', text, re.M)
    assert found, text
    return int(float(found.group(1)))


# ---- jobs run end to end ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("openai:gpt-4o-mini", "/v1/chat/completions"),
        ("anthropic:claude-haiku-4-5", "/v1/messages"),
    ],
)
def test_chat_job_runs_on_each_provider(
    t1: httpx.Client, sim: SimulatorHandle, worker: Proc, model: str, path: str
) -> None:
    prompt = unique()
    response = t1.post("/v1/jobs", json=chat_body(prompt, model, metadata={"order": 42}))
    assert response.status_code == 202, response.text
    job = response.json()
    assert re.fullmatch(r"job_[0-9A-Z]{26}", job["id"])
    assert job["status"] in ("queued", "running", "succeeded")  # a fast worker may finish first
    assert (job["model"], job["priority"], job["kind"]) == (model, "normal", "chat")
    assert job["result"] is None and job["error"] is None
    assert job["callback"]["status"] == "none" and job["metadata"] == {"order": 42}

    job = wait_job(t1, job["id"])
    assert job["status"] == "succeeded", (job, worker.output()[-3000:])
    result = job["result"]
    assert isinstance(result["output"], str) and result["output"]
    assert result["message"]["role"] == "assistant"
    assert result["message"]["content"] == result["output"]
    assert result["finish_reason"] in ("stop", "length")
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert result["model"] == model and isinstance(result["latency_ms"], int)
    assert job["error"] is None and job["attempts"] == 1
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert [e["path"] for e in calls_with(sim, prompt)] == [path]


def test_embedding_job(t1: httpx.Client, worker: Proc) -> None:
    body = {"model": "openai:text-embedding-3-small", "kind": "embedding"}
    response = t1.post("/v1/jobs", json={**body, "request": {"input": ["one", "two"]}})
    assert response.status_code == 202, response.text
    job = wait_job(t1, response.json()["id"])
    assert job["status"] == "succeeded", job
    embeddings = job["result"]["embeddings"]
    assert len(embeddings) == 2 and all(isinstance(x, float) for x in embeddings[0])


def test_long_poll_returns_when_the_job_ends(
    t1: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    prompt = unique("slow")
    sim.faults([{"delay": 1.5}], match=prompt)
    job_id = t1.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
    started = time.monotonic()
    job = t1.get(f"/v1/jobs/{job_id}", params={"wait": 20}).json()
    elapsed = time.monotonic() - started
    assert job["status"] == "succeeded", job
    assert 1.0 < elapsed < 10, elapsed


def test_long_poll_times_out_with_the_job_as_it_stands(
    t1: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    prompt = unique("slower")
    sim.faults([{"delay": 4}], match=prompt)
    job_id = t1.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
    started = time.monotonic()
    job = t1.get(f"/v1/jobs/{job_id}", params={"wait": 1}).json()
    elapsed = time.monotonic() - started
    assert job["status"] in ("queued", "running"), job
    assert 0.9 < elapsed < 3, elapsed
    assert t1.get(f"/v1/jobs/{job_id}", params={"wait": 0}).json()["id"] == job_id


def test_list_newest_first_and_by_status(t2: httpx.Client, worker: Proc) -> None:
    ids = [t2.post("/v1/jobs", json=chat_body(unique())).json()["id"] for _ in range(3)]
    for job_id in ids:
        wait_job(t2, job_id)
    listed = t2.get("/v1/jobs", params={"limit": 3}).json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    succeeded = t2.get("/v1/jobs", params={"status": "succeeded", "limit": 1000}).json()["jobs"]
    assert set(ids) <= {j["id"] for j in succeeded}
    assert all(j["status"] == "succeeded" for j in succeeded)
    assert t2.get("/v1/jobs", params={"status": "cancelled"}).json()["jobs"] == []


def test_idempotency_key_per_tenant(
    t1: httpx.Client, t2: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    prompt, key = unique(), unique("idem")
    first = t1.post("/v1/jobs", json=chat_body(prompt), headers={"Idempotency-Key": key})
    again = t1.post("/v1/jobs", json=chat_body(prompt), headers={"Idempotency-Key": key})
    other = t2.post("/v1/jobs", json=chat_body(prompt), headers={"Idempotency-Key": key})
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 202)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    wait_job(t1, first.json()["id"])
    wait_job(t2, other.json()["id"])
    assert len(calls_with(sim, prompt)) == 2  # one per tenant, none for the replay
    listed = [j["id"] for j in t1.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]]
    assert listed.count(first.json()["id"]) == 1


# ---- cancel and redeliver -----------------------------------------------------------


def test_cancel_before_run_never_calls_the_provider(
    t1: httpx.Client, api_url: str, sim: SimulatorHandle, worker: Proc
) -> None:
    prompt = unique("cancel me")
    callback = "http://127.0.0.1:9/hook"
    with paused(worker):
        job_id = t1.post("/v1/jobs", json=chat_body(prompt, callback_url=callback)).json()["id"]
        response = t1.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        job = response.json()
        assert job["status"] == "cancelled" and job["finished_at"]
        assert job["error"]["type"] == "cancelled" and job["error"]["retryable"] is False
        assert job["callback"]["status"] == "pending"
        assert_error(t1.post(f"/v1/jobs/{job_id}/cancel"), 409, "conflict")
    wait_until(lambda: queue_depth(api_url, "jobs.normal") == 0, timeout=10)
    time.sleep(0.5)
    assert calls_with(sim, prompt) == []
    job = t1.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["attempts"] == 0 and job["result"] is None


def test_cancel_of_an_ended_job_is_a_conflict(t1: httpx.Client, worker: Proc) -> None:
    job = wait_job(t1, t1.post("/v1/jobs", json=chat_body(unique())).json()["id"])
    message = assert_error(t1.post(f"/v1/jobs/{job['id']}/cancel"), 409, "conflict")
    assert "succeeded" in message
    assert t1.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


def test_redeliver(t1: httpx.Client, worker: Proc) -> None:
    plain = wait_job(t1, t1.post("/v1/jobs", json=chat_body(unique())).json()["id"])
    assert_error(t1.post(f"/v1/jobs/{plain['id']}/redeliver"), 409, "conflict")
    with paused(worker):
        body = chat_body(unique(), callback_url="http://127.0.0.1:9/hook")
        queued = t1.post("/v1/jobs", json=body).json()
        assert_error(t1.post(f"/v1/jobs/{queued['id']}/redeliver"), 409, "conflict")
        t1.post(f"/v1/jobs/{queued['id']}/cancel")
        response = t1.post(f"/v1/jobs/{queued['id']}/redeliver")
    assert response.status_code == 200, response.text
    assert response.json()["callback"]["status"] == "pending"
    assert_error(t1.post("/v1/jobs/job_nope/redeliver"), 404, "not_found")


# ---- auth and tenancy ---------------------------------------------------------------


def test_auth_and_tenant_isolation(api_url: str, t1: httpx.Client, t2: httpx.Client) -> None:
    job_id = t1.post("/v1/jobs", json=chat_body(unique())).json()["id"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {KEY1}"}):
        response = httpx.get(f"{api_url}/v1/jobs/{job_id}", headers=headers)
        assert_error(response, 401, "authentication")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(httpx.post(f"{api_url}/v1/jobs", json=chat_body("x")), 401, "authentication")
    assert_error(t2.get(f"/v1/jobs/{job_id}"), 404, "not_found")
    assert_error(t2.get(f"/v1/jobs/{job_id}", params={"wait": 1}), 404, "not_found")
    assert_error(t2.post(f"/v1/jobs/{job_id}/cancel"), 404, "not_found")
    assert job_id not in {
        j["id"] for j in t2.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]
    }
    assert t1.get(f"/v1/jobs/{job_id}").status_code == 200


# ---- health, metrics, OpenAPI, outages ----------------------------------------------------


def test_health_metrics_and_openapi(api_url: str, t1: httpx.Client, worker: Proc) -> None:
    assert httpx.get(f"{api_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api_url}/readyz").status_code == 200
    wait_job(t1, t1.post("/v1/jobs", json=chat_body(unique(), priority="high")).json()["id"])
    text = httpx.get(f"{api_url}/metrics").text
    assert (
        'courier_jobs_submitted_total{kind="chat",model="openai:gpt-4o-mini",priority="high"}'
        in text
    )
    assert re.search(
        r'courier_api_requests_total\{method="POST",route="/v1/jobs",status="202"\}', text
    )
    assert 'route="/v1/jobs/{job_id}"' in text
    for queue in ("jobs.high", "jobs.normal", "jobs.low", "callbacks"):
        assert f'courier_queue_depth{{queue="{queue}"}}' in text
    spec = httpx.get(f"{api_url}/openapi.json").json()
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/redeliver",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(spec["paths"])
    submit = spec["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"200", "202", "401", "413", "422"} <= set(submit)
    assert submit["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    variants = spec["components"]["schemas"]["JobSubmission"]["anyOf"]
    assert [v["properties"]["request"]["$ref"].rsplit("/", 1)[1] for v in variants] == [
        "ChatRequest",
        "EmbeddingRequest",
    ]


def test_queue_depth_counts_priority_lists(api_url: str, t1: httpx.Client, worker: Proc) -> None:
    with paused(worker):
        ids = [
            t1.post("/v1/jobs", json=chat_body(unique(), priority="low")).json()["id"]
            for _ in range(3)
        ]
        assert queue_depth(api_url, "jobs.low") >= 2  # one may sit in the frozen worker's socket
        for job_id in ids:
            t1.post(f"/v1/jobs/{job_id}/cancel")


def test_redis_down_is_503_not_500(simulator: SimulatorHandle) -> None:
    env = stack_env_for(f"redis://127.0.0.1:{free_port()}/0", simulator)
    proc, url = start_api(env, name="api-no-redis")
    try:
        auth = {"Authorization": f"Bearer {KEY1}"}
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert_error(httpx.get(f"{url}/readyz"), 503, "unavailable")
        assert_error(
            httpx.post(f"{url}/v1/jobs", json=chat_body("x"), headers=auth), 503, "unavailable"
        )
        assert_error(httpx.get(f"{url}/v1/jobs/job_x", headers=auth), 503, "unavailable")
        assert_error(httpx.get(f"{url}/v1/jobs/job_x?wait=1", headers=auth), 503, "unavailable")
        assert_error(httpx.get(f"{url}/v1/jobs", headers=auth), 503, "unavailable")
        assert httpx.get(f"{url}/metrics").status_code == 200
    finally:
        proc.stop()


def test_broker_down_accepts_nothing(
    redis_url: str, simulator: SimulatorHandle, redis_client: redis.Redis
) -> None:
    env = {
        **stack_env_for(redis_url, simulator),
        "COURIER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "COURIER_API_KEYS": "t3:key-three",
    }
    proc, url = start_api(env, name="api-no-broker")
    try:
        auth = {"Authorization": "Bearer key-three", "Idempotency-Key": "k-broker"}
        response = httpx.post(f"{url}/v1/jobs", json=chat_body("x"), headers=auth, timeout=30)
        assert_error(response, 503, "unavailable")
        assert httpx.get(f"{url}/v1/jobs", headers=auth).json() == {"jobs": []}
        assert not redis_client.exists(keys.idempotency("t3", "k-broker"))
    finally:
        proc.stop()
