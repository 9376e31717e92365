"""The ``courier`` command: worker defaults, submit, simulate, and ``courier dev``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import pytest

from producers.cli import worker_argv
from tests.support.procs import ROOT, Proc, free_port, python_module, wait_http, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, unique

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.timeout(90)

QUEUES = "jobs.high,jobs.normal,jobs.low,callbacks"


def courier(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- courier worker ----------------------------------------------------------------


def test_worker_defaults() -> None:
    argv = worker_argv([], concurrency=1000)
    assert argv[:3] == ["-A", "workers.app", "worker"]
    joined = " ".join(argv)
    for part in (
        "-P gevent",
        "-c 1000",
        f"-Q {QUEUES}",
        "--without-gossip",
        "--without-mingle",
        "-O fair",
        "--loglevel INFO",
    ):
        assert part in joined
    assert "-E" not in argv  # task events follow COURIER_TASK_EVENTS (config/celery.py)


@pytest.mark.parametrize(
    ("args", "absent", "present"),
    [
        (["-c", "5"], "-c 1000", "-c 5"),
        (["--concurrency=7"], "-c 1000", "--concurrency=7"),
        (["-P", "threads"], "-P gevent", "-P threads"),
        (["--pool=solo"], "-P gevent", "--pool=solo"),
        (["-Q", "jobs.low"], f"-Q {QUEUES}", "-Q jobs.low"),
        (["-l", "DEBUG"], "--loglevel INFO", "-l DEBUG"),
        (["--max-tasks-per-child", "10"], "", "--max-tasks-per-child 10"),
    ],
)
def test_worker_options_override_defaults(args: list[str], absent: str, present: str) -> None:
    joined = " ".join(worker_argv(args, concurrency=1000))
    assert present in joined
    if absent:
        assert absent not in joined


def test_worker_high_only_lane() -> None:
    joined = " ".join(worker_argv([], concurrency=10, high_only=True))
    assert "-Q jobs.high " in joined + " " and "jobs.normal" not in joined
    assert "-n high@%h" in joined


# ---- courier submit ----------------------------------------------------------------


def test_submit_wait_prints_the_finished_job(api_url: str, worker: Proc) -> None:
    env = {"COURIER_API_URL": api_url, "COURIER_API_KEY": KEY1}
    done = courier(
        "submit",
        "--model",
        "openai:gpt-4o-mini",
        "--prompt",
        unique(),
        "--wait",
        "--priority",
        "high",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded" and job["priority"] == "high" and job["result"]["output"]

    queued = courier(
        "submit",
        "--model",
        "openai:text-embedding-3-small",
        "--kind",
        "embedding",
        "--prompt",
        "vectors",
        env=env,
    )
    assert queued.returncode == 0, queued.stderr
    assert json.loads(queued.stdout)["status"] in ("queued", "running", "succeeded")


def test_submit_exit_status(api_url: str, sim: SimulatorHandle, worker: Proc) -> None:
    env = {"COURIER_API_URL": api_url, "COURIER_API_KEY": KEY1}
    prompt = unique("refuse")
    sim.faults([{"status": 400, "message": "bad request"}], match=prompt)
    failed = courier(
        "submit", "--model", "openai:gpt-4o-mini", "--prompt", prompt, "--wait", env=env
    )
    assert failed.returncode == 1, failed.stderr
    assert json.loads(failed.stdout)["status"] == "failed"

    invalid = courier("submit", "--model", "nope", "--prompt", "x", env=env)
    assert invalid.returncode == 2
    assert json.loads(invalid.stderr)["error"]["type"] == "invalid_request"
    unauthorized = courier(
        "submit", "--model", "openai:x", "--prompt", "x", env={**env, "COURIER_API_KEY": "wrong"}
    )
    assert unauthorized.returncode == 2 and "authentication" in unauthorized.stderr


# ---- courier simulate ----------------------------------------------------------------


def test_simulate_serves_the_provider_apis() -> None:
    port = free_port()
    proc = python_module(
        "producers.cli", "simulate", "--port", str(port), "--rpm", "100", name="simulate"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/_sim/health")
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sim"},
        )
        assert response.status_code == 200 and response.json()["choices"]
    finally:
        proc.stop()


# ---- courier dev ---------------------------------------------------------------------


def dev_env() -> dict[str, str]:
    """No Redis at the configured URL (so dev starts its own) and no provider keys."""
    return {
        "COURIER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "COURIER_API_KEYS": "",
    }


def test_dev_demo_only() -> None:
    ports = [str(free_port()), str(free_port())]
    done = courier(
        "dev",
        "--demo-only",
        "--port",
        ports[0],
        "--flower-port",
        ports[1],
        env=dev_env(),
        timeout=80,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert '"status": "succeeded"' in done.stdout
    assert f"http://127.0.0.1:{ports[0]}/docs" in done.stdout
    assert re.search(r"API key:\s+\S+", done.stdout)
    assert "curl" in done.stdout
    with pytest.raises(httpx.ConnectError):  # everything is stopped
        httpx.get(f"http://127.0.0.1:{ports[0]}/healthz")


def test_dev_stops_cleanly_on_sigint() -> None:
    port = free_port()
    proc = Proc(
        [
            sys.executable,
            "-m",
            "producers.cli",
            "dev",
            "--port",
            str(port),
            "--flower-port",
            str(free_port()),
        ],
        env=dev_env(),
        name="dev",
    )
    try:
        wait_until(lambda: "Ctrl-C stops everything" in proc.output(), timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(30) == 0, proc.output()[-4000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        proc.stop()
