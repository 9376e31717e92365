"""The Python client (sync and async) against the running API and worker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from producers.client import (
    AsyncCourier,
    Courier,
    CourierAPIError,
    JobWaitTimeout,
    submission_body,
)
from tests.support.procs import Proc
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, KEY2, paused, unique

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(60)


def test_sync_client_flow(api_url: str, sim: SimulatorHandle, worker: Proc) -> None:
    prompt = unique()
    with Courier(api_url, KEY1) as courier:
        job = courier.submit(
            "openai:gpt-4o-mini", prompt=prompt, priority="high", metadata={"a": 1}
        )
        assert job["status"] in ("queued", "running", "succeeded") and job["priority"] == "high"
        done = courier.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded" and done["result"]["output"]
        assert courier.get(job["id"])["status"] == "succeeded"
        assert job["id"] in {j["id"] for j in courier.list(status="succeeded", limit=1000)}
        embedding = courier.submit(
            "openai:text-embedding-3-small", prompt="vectors", kind="embedding"
        )
        assert len(courier.wait(embedding["id"], timeout=30)["result"]["embeddings"]) == 1
        with pytest.raises(CourierAPIError) as error:
            courier.cancel(job["id"])
        assert (error.value.status, error.value.type) == (409, "conflict")
    assert [e["prompt"] for e in sim.log() if prompt in (e.get("prompt") or "")]


def test_sync_client_errors_and_idempotency(api_url: str, worker: Proc) -> None:
    with Courier(api_url, KEY1) as courier:
        with pytest.raises(CourierAPIError) as error:
            courier.submit("nope:model", prompt="x")
        assert (error.value.status, error.value.type) == (422, "invalid_request")
        assert "provider" in error.value.message
        with pytest.raises(CourierAPIError) as error:
            courier.get("job_missing")
        assert error.value.status == 404
        with pytest.raises(ValueError):
            courier.submit("openai:gpt-4o-mini")
        key = unique("idem")
        first = courier.submit("openai:gpt-4o-mini", prompt="same", idempotency_key=key)
        again = courier.submit("openai:gpt-4o-mini", prompt="same", idempotency_key=key)
        assert first["id"] == again["id"]
    with Courier(api_url, "wrong") as courier, pytest.raises(CourierAPIError) as error:
        courier.list()
    assert (error.value.status, error.value.type) == (401, "authentication")


def test_wait_timeout_and_cancel(api_url: str, worker: Proc) -> None:
    with Courier(api_url, KEY2) as courier, paused(worker):
        job = courier.submit("anthropic:claude-haiku-4-5", prompt=unique())
        with pytest.raises(JobWaitTimeout) as timeout:
            courier.wait(job["id"], timeout=1)
        assert timeout.value.job["status"] == "queued"
        cancelled = courier.cancel(job["id"])
        assert cancelled["status"] == "cancelled"
        assert courier.wait(job["id"], timeout=5)["status"] == "cancelled"


def test_defaults_from_the_environment(
    api_url: str, worker: Proc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURIER_API_URL", api_url)
    monkeypatch.setenv("COURIER_API_KEY", KEY1)
    with Courier() as courier:
        assert isinstance(courier.list(limit=1), list)
    monkeypatch.setenv("COURIER_API_URL", "http://127.0.0.1:9")
    with Courier() as courier, pytest.raises(httpx.ConnectError):
        courier.list()


def test_async_client_flow(api_url: str, worker: Proc) -> None:
    async def scenario() -> None:
        async with AsyncCourier(api_url, KEY1) as courier:
            jobs = await asyncio.gather(
                *(courier.submit("openai:gpt-4o-mini", prompt=unique()) for _ in range(5))
            )
            done = await asyncio.gather(*(courier.wait(j["id"], timeout=30) for j in jobs))
            assert [d["status"] for d in done] == ["succeeded"] * 5
            listed = await courier.list(limit=5)
            assert {j["id"] for j in listed} == {j["id"] for j in jobs}
            got = await courier.get(jobs[0]["id"], wait=1)
            assert got["status"] == "succeeded"
            with pytest.raises(CourierAPIError) as error:
                await courier.cancel(jobs[0]["id"])
            assert error.value.status == 409
            with pytest.raises(CourierAPIError):
                await courier.redeliver(jobs[0]["id"])  # no callback_url: 409

    asyncio.run(scenario())


def test_submit_many_sync_and_async(api_url: str, worker: Proc) -> None:
    bodies = [submission_body("openai:gpt-4o-mini", prompt=unique("many")) for _ in range(3)]
    with Courier(api_url, KEY1) as courier:
        jobs = courier.submit_many(bodies, idempotency_key=unique("many-key"))
        assert len(jobs) == 3
        assert {courier.wait(j["id"], timeout=30)["status"] for j in jobs} == {"succeeded"}
        with pytest.raises(CourierAPIError) as error:
            courier.submit_many([{"model": "nope"}])
        assert error.value.status == 422

    async def scenario() -> list[str]:
        async with AsyncCourier(api_url, KEY1) as courier:
            jobs = await courier.submit_many(bodies[:2])
            done = await asyncio.gather(*(courier.wait(j["id"], timeout=30) for j in jobs))
            return [d["status"] for d in done]

    assert asyncio.run(scenario()) == ["succeeded"] * 2
