"""``POST /v1/jobs/batch``: many jobs in one request, all or none (real API, worker, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from core import keys
from producers.api import quotas
from tests.support.procs import Proc, free_port
from tests.support.simulator import SimulatorHandle
from tests.support.stack import assert_error, chat_body, paused, start_api, unique, wait_job

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)


def calls_with(sim: SimulatorHandle, text: str) -> list[dict[str, Any]]:
    return [e for e in sim.log() if text in (e.get("prompt") or "")]


def listed_ids(client: httpx.Client) -> set[str]:
    return {j["id"] for j in client.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]}


def test_a_batch_runs_every_job_in_order_and_replays(
    t1: httpx.Client, sim: SimulatorHandle, worker: Proc
) -> None:
    prompts = [unique("batch") for _ in range(3)]
    jobs = [
        chat_body(prompts[0]),
        chat_body(prompts[1], "anthropic:claude-haiku-4-5", priority="high"),
        {"model": "openai:text-embedding-3-small", "kind": "embedding",
         "request": {"input": [prompts[2]]}, "metadata": {"n": 3}},
    ]  # fmt: skip
    key = unique("batch-key")
    response = t1.post("/v1/jobs/batch", json={"jobs": jobs}, headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    sent = response.json()["jobs"]
    assert [j["model"] for j in sent] == [j["model"] for j in jobs]
    assert [j["priority"] for j in sent] == ["normal", "high", "normal"]
    ended = [wait_job(t1, j["id"]) for j in sent]
    assert [j["status"] for j in ended] == ["succeeded"] * 3
    assert ended[2]["result"]["embeddings"] and ended[2]["metadata"] == {"n": 3}

    again = t1.post("/v1/jobs/batch", json={"jobs": jobs}, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert [j["id"] for j in again.json()["jobs"]] == [j["id"] for j in sent]
    assert [len(calls_with(sim, p)) for p in prompts[:2]] == [1, 1]  # none for the replay


def test_one_bad_job_refuses_the_batch(t1: httpx.Client, sim: SimulatorHandle) -> None:
    before = listed_ids(t1)
    prompt = unique("refused")
    bad = {"jobs": [chat_body(prompt), chat_body(prompt, "no-provider-prefix")]}
    assert "jobs.1.model" in assert_error(t1.post("/v1/jobs/batch", json=bad), 422)
    assert_error(t1.post("/v1/jobs/batch", json={"jobs": []}), 422)
    assert_error(t1.post("/v1/jobs/batch", json={"jobs": [chat_body("x")] * 501}), 422)
    unsafe = {"jobs": [chat_body(prompt, callback_url="ftp://example.com/hook")]}
    assert_error(t1.post("/v1/jobs/batch", json=unsafe), 422)
    assert listed_ids(t1) == before
    assert calls_with(sim, prompt) == []


@pytest.fixture(scope="module")
def quota_api(stack_env: dict[str, str]) -> Iterator[str]:
    env = {
        **stack_env,
        "COURIER_API_KEYS": "bq:key-bq,br:key-br",
        "COURIER_TENANT_MAX_UNFINISHED": "3",
        "COURIER_TENANT_SUBMIT_RATE": "0.1",
        "COURIER_TENANT_SUBMIT_BURST": "10",
    }
    proc, url = start_api(env, name="api-batch-quota")
    yield url
    proc.stop()


def client_of(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_a_batch_over_the_unfinished_cap_stores_nothing(
    quota_api: str, redis_client: redis.Redis, worker: Proc
) -> None:
    with paused(worker), client_of(quota_api, "key-bq") as bq:
        two = {"jobs": [chat_body(unique("cap")) for _ in range(2)]}
        assert bq.post("/v1/jobs/batch", json=two).status_code == 202
        # The first of these two fits under the cap of 3 and is undone with the second.
        response = bq.post("/v1/jobs/batch", json=two, headers={"Idempotency-Key": "bq-1"})
        assert_error(response, 429, "quota_exceeded")
        assert redis_client.zcard(keys.tenant_unfinished("bq")) == 2
    assert not redis_client.exists(keys.idempotency("bq", "bq-1#0"))


def test_a_batch_counts_each_job_against_the_submission_rate(
    quota_api: str, redis_client: redis.Redis
) -> None:
    with client_of(quota_api, "key-br") as br:
        assert br.post("/v1/jobs/batch", json={"jobs": [chat_body("a")] * 3}).status_code == 202
        response = br.post("/v1/jobs/batch", json={"jobs": [chat_body("b")] * 8})
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
    assert redis_client.zcard(keys.tenant_jobs("br")) == 3


def test_broker_down_accepts_none_of_the_batch(
    stack_env: dict[str, str], redis_client: redis.Redis
) -> None:
    env = {
        **stack_env,
        "COURIER_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "COURIER_API_KEYS": "b3:key-b3",
    }
    proc, url = start_api(env, name="api-batch-no-broker")
    try:
        headers = {"Authorization": "Bearer key-b3", "Idempotency-Key": "b3-k"}
        body = {"jobs": [chat_body("x"), chat_body("y")]}
        response = httpx.post(f"{url}/v1/jobs/batch", json=body, headers=headers, timeout=30)
        assert_error(response, 503, "unavailable")
        assert redis_client.zcard(keys.tenant_jobs("b3")) == 0
        assert redis_client.zcard(keys.tenant_unfinished("b3")) == 0
        assert not redis_client.exists(keys.idempotency("b3", "b3-k#0"))
    finally:
        proc.stop()


def test_a_batch_over_the_burst_is_taken_from_a_full_bucket_in_debt(redis_url: str) -> None:
    async def takes() -> list[float]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return [
                await quotas.take_submit_token(client, "debt", 10.0, 5, 8),  # full: taken
                await quotas.take_submit_token(client, "debt", 10.0, 5, 1),  # 3 in debt
            ]
        finally:
            await client.aclose()

    first, second = asyncio.run(takes())
    assert first == 0
    assert 0.3 < second <= 0.45  # (1 - (-3)) / 10 s, less what refilled meanwhile
