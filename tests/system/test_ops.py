"""Operations: Flower on the real app, ``/metrics`` after real jobs, the audit trail, the
multiprocess metrics mode, and the structure of docker-compose.yml and the Dockerfile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import ROOT, Proc, free_port, wait_until
from tests.support.receiver import Receiver
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    KEY1,
    KEY2,
    chat_body,
    paused,
    stack_env_for,
    start_api,
    start_worker,
    unique,
    wait_job,
)

pytestmark = pytest.mark.timeout(90)
FLOWER_AUTH = ("ops", "flower-pass-123")
LIMITS = {"openai:*": {"rpm": 100000, "tpm": 100000000, "max_in_flight": 500}}


class Stack:
    def __init__(self, api: Proc, url: str, worker: Proc, flower: Proc, flower_url: str) -> None:
        self.api, self.url, self.worker = api, url, worker
        self.flower, self.flower_url = flower, flower_url


@pytest.fixture(scope="module")
def stack(redis_url: str, simulator: SimulatorHandle) -> Iterator[Stack]:
    env = {**stack_env_for(redis_url, simulator), "COURIER_LIMITS": json.dumps(LIMITS)}
    api, url = start_api(env, name="ops-api")
    worker = start_worker(env)
    port = free_port()
    flower = Proc(
        [
            *(sys.executable, "-m", "celery", "-A", "workers.app", "flower"),
            *(f"--port={port}", "--address=127.0.0.1"),
        ],
        env={
            **env,
            "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
            "FLOWER_READ_ONLY": "true",
        },
        name="flower",
    )
    flower_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{flower_url}/healthcheck").status_code == 200, 30)
        yield Stack(api, url, worker, flower, flower_url)
    finally:
        flower.stop()
        worker.stop(timeout=8)
        api.stop()


def t1(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {KEY1}"}, timeout=30)


# ---- Flower ------------------------------------------------------------------------------


def test_flower_sees_the_worker_behind_basic_auth(stack: Stack) -> None:
    assert httpx.get(f"{stack.flower_url}/api/workers").status_code == 401
    assert httpx.get(f"{stack.flower_url}/api/workers", auth=("ops", "wrong")).status_code == 401

    def worker_listed() -> bool:
        workers = httpx.get(
            f"{stack.flower_url}/api/workers", params={"refresh": 1}, auth=FLOWER_AUTH
        ).json()
        return any(name.startswith("test-") for name in workers)

    wait_until(worker_listed, timeout=20, interval=0.5)
    # Read-only: Flower cannot be made to run tasks.
    refused = httpx.post(
        f"{stack.flower_url}/api/task/async-apply/courier.run_job",
        json={"args": ["job_x"]},
        auth=FLOWER_AUTH,
    )
    assert refused.status_code == 403


def test_flower_shows_tasks_by_job_id_only(stack: Stack) -> None:
    prompt = unique("flower-secret-prompt")
    with t1(stack) as client:
        job_id = client.post("/v1/jobs", json=chat_body(prompt)).json()["id"]
        assert wait_job(client, job_id)["status"] == "succeeded"

    def seen() -> dict[str, Any] | None:
        tasks = httpx.get(f"{stack.flower_url}/api/tasks", auth=FLOWER_AUTH).json()
        for task in tasks.values():
            if job_id in str(task.get("args")) and task.get("state") == "SUCCESS":
                return dict(task)
        return None

    wait_until(lambda: seen() is not None, timeout=20, interval=0.3)
    task = seen()
    assert task is not None and task["name"] == "courier.run_job"
    assert task.get("runtime") is not None  # the run's, from claim to end (test_flower)
    text = httpx.get(f"{stack.flower_url}/api/tasks", auth=FLOWER_AUTH).text
    assert prompt not in text and "flower-secret-prompt" not in text
    info = httpx.get(f"{stack.flower_url}/api/task/info/{task['uuid']}", auth=FLOWER_AUTH).text
    assert job_id in info and "flower-secret-prompt" not in info


# ---- /metrics ----------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if line.split(" ")[0].split("{")[0] == name and all(
            found.get(k) == v for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_after_jobs(stack: Stack, sim: SimulatorHandle) -> None:
    key = {"model": "openai:gpt-4o-mini"}
    refused = unique("refuse-me")
    sim.faults([{"status": 400, "message": "bad request"}], match=refused)
    with Receiver() as receiver, t1(stack) as client:
        ids = [
            client.post("/v1/jobs", json=chat_body(unique(), priority=p)).json()["id"]
            for p in ("high", "normal", "low", "normal")
        ]
        hooked = client.post(
            "/v1/jobs", json=chat_body(unique(), callback_url=receiver.url("/ops"))
        ).json()["id"]
        failing = client.post("/v1/jobs", json=chat_body(refused)).json()["id"]
        for job_id in [*ids, hooked, failing]:
            wait_job(client, job_id)
        receiver.wait_for("/ops", 1)
        with paused(stack.worker):
            waiting = client.post("/v1/jobs", json=chat_body(unique(), priority="low")).json()
            time.sleep(1.2)
            text = httpx.get(f"{stack.url}/metrics").text
            assert client.post(f"/v1/jobs/{waiting['id']}/cancel").status_code == 200
        age = sample(text, "courier_queue_oldest_age_seconds", priority="low")
        assert age is not None and age >= 1.0, text
        assert (sample(text, "courier_jobs_queued", priority="low") or 0) >= 1

    def finished(status: str, priority: str = "normal") -> float:
        text = httpx.get(f"{stack.url}/metrics").text
        return (
            sample(text, "courier_jobs_finished_total", status=status, priority=priority, **key)
            or 0
        )

    # Worker counters reach Redis within the flush interval (1 s).
    wait_until(lambda: finished("succeeded") >= 3 and finished("failed") >= 1, timeout=10)
    wait_until(lambda: finished("cancelled", "low") >= 1, timeout=5)
    text = httpx.get(f"{stack.url}/metrics").text
    assert sample(text, "courier_redis_up") == 1
    for priority in ("high", "low"):
        assert (
            sample(
                text, "courier_jobs_finished_total", status="succeeded", priority=priority, **key
            )
            or 0
        ) >= 1
    submitted = sample(text, "courier_jobs_submitted_total", priority="normal", kind="chat", **key)
    assert submitted is not None and submitted >= 4
    calls = sample(text, "courier_provider_call_seconds_count", **key)
    assert calls is not None and calls >= 6
    total = sample(text, "courier_provider_call_seconds_sum", **key)
    assert total is not None and 0 < total < calls * 30
    assert sample(text, "courier_provider_call_seconds_bucket", le="+Inf", **key) == calls
    assert (sample(text, "courier_provider_errors_total", type="invalid_request", **key) or 0) >= 1
    assert (sample(text, "courier_tokens_total", direction="input", **key) or 0) > 0
    assert (sample(text, "courier_tokens_total", direction="output", **key) or 0) > 0
    assert (sample(text, "courier_webhook_deliveries_total", outcome="delivered") or 0) >= 1
    assert (sample(text, "courier_webhook_attempts_total") or 0) >= 1
    assert sample(text, "courier_webhooks_scheduled") is not None
    assert sample(text, "courier_jobs_running") is not None
    assert sample(text, "courier_jobs_scheduled") is not None
    assert sample(text, "courier_queue_depth", queue="jobs.high") is not None
    assert (
        sample(text, "courier_ratelimit_limit", pattern="openai:*", resource="requests") == 100000
    )
    remaining = sample(text, "courier_ratelimit_remaining", pattern="openai:*", resource="tokens")
    assert remaining is not None and 0 <= remaining <= 100000000
    assert sample(text, "courier_ratelimit_in_flight", pattern="openai:*") is not None
    assert sample(text, "courier_ratelimit_waiters", pattern="openai:*", priority="high") == 0
    assert sample(text, "courier_api_long_polls") is not None
    assert 'courier_api_requests_total{method="POST",route="/v1/jobs",status="202"}' in text


def test_audit_trail(stack: Stack) -> None:
    prompt = unique("audit-secret-prompt")
    with t1(stack) as client:
        job = client.post("/v1/jobs", json=chat_body(prompt, priority="low")).json()
        client.post(f"/v1/jobs/{job['id']}/cancel")
    other = httpx.post(
        f"{stack.url}/v1/jobs/{job['id']}/cancel", headers={"Authorization": f"Bearer {KEY2}"}
    )
    assert other.status_code == 404

    def lines() -> list[dict[str, Any]]:
        found = []
        for line in stack.api.output().splitlines():
            if '"courier.audit"' in line:
                entry = json.loads(line)
                if entry.get("job_id") == job["id"]:
                    found.append(entry)
        return found

    wait_until(lambda: len(lines()) >= 3, timeout=5)
    submit, cancel, refused = lines()[:3]
    assert submit["event"] == "job.submit" and submit["tenant"] == "t1"
    assert submit["http_status"] == 202 and submit["priority"] == "low"
    assert cancel["event"] == "job.cancel" and cancel["tenant"] == "t1"
    assert cancel["outcome"] in ("ok", "refused")
    assert refused["event"] == "job.cancel" and refused["http_status"] == 404
    assert refused["tenant"] is None and refused["outcome"] == "refused"
    assert refused["key_id"] and refused["key_id"] != submit["key_id"]
    log = stack.api.output()
    assert prompt not in log and KEY1 not in log and KEY2 not in log
    assert "audit-secret-prompt" not in stack.worker.output()


def test_metrics_multiprocess_mode(tmp_path: Path, redis_url: str) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, the per-process counters of every API process add up."""
    script = f"""
import multiprocessing, redis
from producers.api.metrics import ApiMetrics

def serve(n):
    metrics = ApiMetrics(redis.Redis.from_url({redis_url!r}))
    for _ in range(n):
        metrics.requests.labels("/x", "GET", "200").inc()

procs = [multiprocessing.Process(target=serve, args=(n,)) for n in (2, 3)]
for p in procs: p.start()
for p in procs: p.join()
print(ApiMetrics(redis.Redis.from_url({redis_url!r})).render().decode())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 'courier_api_requests_total{method="GET",route="/x",status="200"} 5.0' in done.stdout
    assert "courier_redis_up 1.0" in done.stdout


# ---- docker-compose.yml and the Dockerfile -------------------------------------------------


def test_compose_structure() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = compose["services"]
    assert {"redis", "api", "worker", "worker-high", "flower", "simulator"} <= set(services)

    redis_cmd = " ".join(map(str, _as_list(services["redis"]["command"])))
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    assert "redis-cli" in " ".join(_as_list(services["redis"]["healthcheck"]["test"]))

    built = [name for name, s in services.items() if "build" in s]
    assert {"api", "worker", "worker-high", "flower"} <= set(built)
    for name in ("api", "worker", "worker-high", "flower"):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert "healthcheck" in services["api"]
    assert "/healthz" in " ".join(_as_list(services["api"]["healthcheck"]["test"]))
    assert "courier api" in _cmd(services["api"]) and "0.0.0.0" in _cmd(services["api"])
    assert _cmd(services["worker"]).startswith("courier worker")
    assert "--high-only" in _cmd(services["worker-high"])

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # scalable
    flower = services["flower"]
    assert "celery -A workers.app flower" in _cmd(flower)
    env = flower["environment"]
    assert "FLOWER_BASIC_AUTH" in env and "?" in str(env["FLOWER_BASIC_AUTH"])  # required
    for port in flower.get("ports", []):  # published only on the loopback interface
        assert str(port).startswith("127.0.0.1:"), port
    assert services["simulator"]["profiles"] == ["demo"]

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"pip install[^\n]* \.", dockerfile)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M)
    assert ".venv" in (ROOT / ".dockerignore").read_text()


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else str(value).split()


def _cmd(service: dict[str, Any]) -> str:
    return " ".join(_as_list(service["command"]))


def test_series_are_capped_and_histograms_cumulative() -> None:
    from core import metrics as wm
    from producers.api.collectors import MAX_SERIES, capped

    flood = {(f"openai:made-up-{i}", "normal", "chat"): float(i) for i in range(MAX_SERIES * 2)}
    kept = capped(flood)
    assert len(kept) == MAX_SERIES and sum(kept.values()) == sum(flood.values())
    assert ("_other", "_other", "_other") in kept

    series = {("m", "0.1"): 2.0, ("m", "1.0"): 1.0, ("m", "+Inf"): 1.0, ("m", "sum"): 400.5}
    buckets, total = wm.latency_histograms(series)["m"]
    assert dict(buckets)["0.1"] == 2 and dict(buckets)["1.0"] == 3 and buckets[-1] == ("+Inf", 4)
    assert total == 400.5
    assert wm.bucket_for(0.05) == "0.1" and wm.bucket_for(1e6) == "+Inf"
