"""The running system for end-to-end tests: API and worker processes on the test Redis
and the provider simulator, started through ``courier api`` / ``courier worker``; and
helpers to drive it. The fixtures are in :mod:`tests.support.fixtures`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.support.procs import Proc, free_port, python_module, wait_http
from tests.support.simulator import SimulatorHandle
from tests.support.workers import courier_env, wait_ready

KEY1, KEY2 = "key-one", "key-two"
API_KEYS = f"t1:{KEY1},t2:{KEY2}"
TERMINAL = ("succeeded", "failed", "cancelled", "expired")


def stack_env_for(redis_url: str, sim: SimulatorHandle) -> dict[str, str]:
    return courier_env(redis_url, sim, COURIER_API_KEYS=API_KEYS)


def start_api(env: dict[str, str], name: str = "api") -> tuple[Proc, str]:
    port = free_port()
    proc = python_module(
        "producers.cli", "api", "--port", str(port), "--log-level", "warning", env=env, name=name
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"the API did not start:\n{proc.output()}") from None
    return proc, url


def start_flower(
    env: dict[str, str], auth: tuple[str, str], name: str = "flower"
) -> tuple[Proc, str]:
    """``celery -A workers.app flower`` (read-only, basic auth), once it answers."""
    port = free_port()
    proc = Proc(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
         "--address=127.0.0.1", "--read_only"],
        env={**env, "FLOWER_BASIC_AUTH": ":".join(auth)},
        name=name,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthcheck", timeout=30)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"Flower did not start:\n{proc.output()}") from None
    return proc, url


def start_worker(env: dict[str, str], *args: str) -> Proc:
    """``courier worker`` as users start it (at ``-c 50``), once it consumes."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    return wait_ready(
        python_module(
            "producers.cli", "worker", "-c", "50", "-n", name, *args, env=env, name="worker"
        )
    )


@contextmanager
def paused(worker: Proc) -> Iterator[Proc]:
    """The worker frozen (SIGSTOP): nothing submitted meanwhile runs until it resumes.
    (A message may reach its socket; it is read, and the job claimed, only after.)"""
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        yield worker
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def chat_body(prompt: str, model: str = "openai:gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "request": {"messages": [{"role": "user", "content": prompt}], "max_tokens": 50},
        **extra,
    }


def unique(text: str = "hello") -> str:
    """A prompt no other test sends (to find its requests in the simulator log)."""
    return f"{text} {uuid.uuid4().hex}"


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """Long-poll until the job ends."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
        if job.get("status") in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not end within {timeout} s: {job}")


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if type_:
        assert body["error"]["type"] == type_, body
    return str(body["error"]["message"])
