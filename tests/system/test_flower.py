"""Flower tells the truth: each job's ``courier.run_job`` task follows the job, against a real
Flower process and real workers in each way a worker takes jobs (the intake; Celery's consumer
with the call pool; calls held in the task)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from celery import Celery

from tests.support.procs import Proc, free_port, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    KEY1,
    chat_body,
    stack_env_for,
    start_api,
    start_worker,
    unique,
    wait_job,
)
from tests.support.workers import flush_queues

pytestmark = pytest.mark.timeout(120)
AUTH = ("ops", "flower-pass-123")
SLOW_S = 3.0
MODES = {
    "intake": {},
    "consumer+pool": {"COURIER_WORKER_INTAKE": "false"},
    "in-task": {"COURIER_WORKER_INTAKE": "false", "COURIER_WORKER_CALL_POOL": "false"},
}


class Stack:
    def __init__(
        self, url: str, flower_url: str, worker: Proc, mode: str, env: dict[str, str]
    ) -> None:
        self.url, self.flower_url, self.worker, self.mode = url, flower_url, worker, mode
        self.env = env

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {KEY1}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def tasks_of(self, job_id: str) -> list[dict[str, Any]]:
        tasks = httpx.get(f"{self.flower_url}/api/tasks", auth=AUTH, timeout=10).json()
        return [dict(t) for t in tasks.values() if job_id in str(t.get("args"))]

    def wait_state(self, job_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
        """The job's task in ``state`` (a job handed back runs again as a task of its own)."""

        def in_state() -> dict[str, Any] | None:
            return next((t for t in self.tasks_of(job_id) if t.get("state") == state), None)

        try:
            wait_until(lambda: in_state() is not None, timeout=timeout, interval=0.25)
        except TimeoutError:
            found = self.tasks_of(job_id)
            raise AssertionError(f"{job_id}: not {state} in Flower: {found}") from None
        task = in_state()
        assert task is not None
        return task

    def active_job_ids(self) -> list[str]:
        """What Flower's worker page lists as active: ``inspect active``, asked by name."""
        names = httpx.get(
            f"{self.flower_url}/api/workers", params={"status": 1}, auth=AUTH, timeout=20
        ).json()
        listed = []
        for name in names:
            workers = httpx.get(
                f"{self.flower_url}/api/workers",
                params={"refresh": 1, "workername": name},
                auth=AUTH,
                timeout=20,
            ).json()
            for info in workers.values():
                listed += [str(task.get("args")) for task in info.get("active") or []]
        return listed


def inspect_active(env: dict[str, str]) -> str:
    """Remote control's ``inspect active``, as ``celery -A workers.app inspect active`` asks it
    (from this process: the command's own start-up is slow on a loaded machine)."""
    app = Celery(broker=env["COURIER_REDIS_URL"])
    try:
        return json.dumps(app.control.inspect(timeout=5).active() or {})
    finally:
        app.close()


@pytest.fixture(scope="module")
def flower(redis_url: str, simulator: SimulatorHandle) -> Iterator[str]:
    port = free_port()
    env = {**stack_env_for(redis_url, simulator), "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    proc = Proc(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", "--read_only"],
        env=env,
        name="flower",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthcheck").status_code == 200, 30)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module", params=list(MODES))
def stack(
    request: pytest.FixtureRequest, redis_url: str, simulator: SimulatorHandle, flower: str
) -> Iterator[Stack]:
    mode = str(request.param)
    flush_queues(redis_url)
    env = {**stack_env_for(redis_url, simulator), **MODES[mode]}
    api, url = start_api(env, name=f"flower-api-{mode}")
    worker = start_worker(env)
    try:
        yield Stack(url, flower, worker, mode, env)
    finally:
        worker.stop(timeout=8)
        api.stop()


def test_a_slow_job_is_started_then_succeeds_with_its_real_runtime(
    stack: Stack, simulator: SimulatorHandle
) -> None:
    prompt = unique("flower-slow")
    simulator.faults([{"delay": 3 * SLOW_S}], match=prompt)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
        running = stack.wait_state(job_id, "STARTED")
        assert running["name"] == "courier.run_job"
        assert running["args"] == repr([job_id])  # the job id, and nothing else
        active = stack.active_job_ids()
        assert any(job_id in args for args in active), (stack.mode, active)
        assert job_id in inspect_active(stack.env)
        assert wait_job(client, job_id)["status"] == "succeeded"
    done = stack.wait_state(job_id, "SUCCESS")
    assert done["runtime"] >= 3 * SLOW_S, done
    text = httpx.get(f"{stack.flower_url}/api/tasks", auth=AUTH).text
    assert "flower-slow" not in text  # no prompt reaches Flower


def test_a_failing_job_is_a_failure_naming_its_error_type(
    stack: Stack, simulator: SimulatorHandle
) -> None:
    prompt = unique("flower-bad")
    simulator.faults([{"status": 400, "message": "no such thing"}], match=prompt)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
        assert wait_job(client, job_id)["status"] == "failed"
    task = stack.wait_state(job_id, "FAILURE")
    assert "invalid_request" in str(task.get("exception")), task
    assert "flower-bad" not in str(task)


def test_a_cancelled_job_is_revoked(stack: Stack, simulator: SimulatorHandle) -> None:
    prompt = unique("flower-cancel")
    simulator.faults([{"delay": SLOW_S}], match=prompt)
    with stack.client() as client:
        job_id = client.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
        stack.wait_state(job_id, "STARTED")
        assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    stack.wait_state(job_id, "REVOKED", timeout=SLOW_S + 15)


def test_a_job_sent_back_to_the_schedule_is_a_retry(
    stack: Stack, simulator: SimulatorHandle
) -> None:
    prompt = unique("flower-retry")
    # A long Retry-After makes the runner hand the job back to the durable schedule.
    simulator.faults([{"status": 429, "retry_after": 5}], match=prompt)
    with stack.client() as client:
        body = chat_body(prompt, max_attempts=5)
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        stack.wait_state(job_id, "RETRY")
        assert wait_job(client, job_id, timeout=60)["status"] == "succeeded"
    stack.wait_state(job_id, "SUCCESS", timeout=20)
