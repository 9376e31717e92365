"""A Redis failover under load, with real parts: a master, two replicas and three Sentinels
(:mod:`tests.support.sentinel`), the API, a worker and Flower pointed at the Sentinels, the
provider simulator. Jobs are submitted over HTTP while the master is killed with SIGKILL.

Counted (run with ``-s`` to see them): jobs accepted, jobs ended, jobs lost (must be 0),
submissions refused with 503 meanwhile (never a 500), duplicate provider calls, and the time
from the kill to the first job ended after it (on the new master).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from config.settings import Settings
from core import keys
from core.connections import store_client
from core.jobs import TERMINAL
from core.store import JobStore
from producers.client import Courier, CourierAPIError
from tests.support.procs import Proc, wait_until
from tests.support.sentinel import SentinelCluster
from tests.support.simulator import SimulatorHandle
from tests.support.stack import (
    API_KEYS,
    KEY1,
    assert_error,
    chat_body,
    stack_env_for,
    start_api,
    start_flower,
)
from tests.support.workers import courier_env, flush_queues, start_worker

pytestmark = pytest.mark.timeout(240)

JOBS = 250  # over HTTP, each answer counted
CLIENT_JOBS = 20  # through the Python client, which resends on 503 by itself (retry_s)
LATENCY_S = 0.5
SUBMITTERS = 8
FLOWER_AUTH = ("ops", "flower-pass-123")
PACE_S = 0.1  # between one submitter's jobs: ~80 submissions/s, still coming in at the kill
ENV = {
    "COURIER_API_KEYS": API_KEYS,
    "COURIER_LEASE_TTL_S": "10",
    "COURIER_SWEEP_INTERVAL_S": "0.5",
    "COURIER_TENANT_SUBMIT_RATE": "0",  # no submission quota: this test is about Redis
}


@dataclass
class Submissions:
    """What the submitters saw: job ids accepted, and every answer's status."""

    accepted: dict[str, str] = field(default_factory=dict)  # prompt → job id
    statuses: Counter[int] = field(default_factory=Counter)
    without_retry_after: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def submit_all(api_url: str, prompts: list[str], seen: Submissions, deadline: float) -> None:
    """Submit each prompt until it is accepted, honouring 503 + Retry-After; the prompt is
    also the Idempotency-Key, so a retry never makes a second job."""
    headers = {"Authorization": f"Bearer {KEY1}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        for prompt in prompts:
            time.sleep(PACE_S)
            while time.monotonic() < deadline:
                try:
                    answer = client.post(
                        "/v1/jobs", json=chat_body(prompt), headers={"Idempotency-Key": prompt}
                    )
                except httpx.TransportError:
                    time.sleep(0.5)
                    continue
                with seen.lock:
                    seen.statuses[answer.status_code] += 1
                    if answer.status_code in (200, 202):
                        seen.accepted[prompt] = answer.json()["id"]
                        break
                    if answer.status_code == 503 and "retry-after" not in answer.headers:
                        seen.without_retry_after += 1
                if answer.status_code != 503:
                    break  # a 4xx or 5xx: counted, not retried
                time.sleep(float(answer.headers.get("retry-after", "1")))


def ended(store: JobStore, job_ids: list[str]) -> set[str]:
    return {r["id"] for r in store.get_many(job_ids) if r["status"] in TERMINAL}


def first_ending(store: JobStore, seen: Submissions, ended_before: set[str]) -> tuple[float, float]:
    """When (monotonic) a master answers again, and when the first job not ended before the
    kill is seen ended there."""
    answered = 0.0
    while True:
        with seen.lock:
            job_ids = list(seen.accepted.values())
        try:
            now_ended = ended(store, job_ids)
        except redis.RedisError:
            time.sleep(0.02)  # no master yet
            continue
        answered = answered or time.monotonic()
        if now_ended - ended_before:
            return answered, time.monotonic()
        time.sleep(0.02)


def flower_successes(url: str) -> set[str]:
    """Job ids of the ``courier.run_job`` tasks Flower shows as SUCCESS."""
    tasks = httpx.get(f"{url}/api/tasks", auth=FLOWER_AUTH, timeout=10).json()
    return {
        str(task["args"]).strip("[]()',\" ")
        for task in tasks.values()
        if task.get("state") == "SUCCESS"
    }


def submit_with_client(api_url: str, prompts: list[str], seen: Submissions) -> None:
    """``Courier.submit(retry_s=…)``: the client waits out the failover itself."""
    with Courier(api_url, KEY1) as courier:
        for prompt in prompts:
            time.sleep(PACE_S * 2)
            job = courier.submit("openai:gpt-4o-mini", prompt=prompt, retry_s=60)
            with seen.lock:
                seen.accepted[prompt] = job["id"]


@pytest.fixture()
def cluster() -> Iterator[SentinelCluster]:
    deployment = SentinelCluster(replicas=2)
    deployment.start()
    yield deployment
    deployment.stop()


def test_a_master_killed_under_load_loses_no_accepted_job(
    cluster: SentinelCluster, sim: SimulatorHandle
) -> None:
    sim.configure(latency=LATENCY_S)
    env = courier_env(cluster.env()["COURIER_REDIS_URL"], sim, **cluster.env(), **ENV)
    settings = Settings(
        redis_url=env["COURIER_REDIS_URL"], redis_sentinels=env["COURIER_REDIS_SENTINELS"]
    )
    store = JobStore(store_client(settings, max_connections=4))
    procs: list[Proc] = []
    try:
        api, api_url = start_api(env, name="ha-api")
        procs.append(api)
        procs.append(start_worker(env["COURIER_REDIS_URL"], sim, concurrency=300, env=env))
        flower, flower_url = start_flower(env, FLOWER_AUTH, name="ha-flower")
        procs.append(flower)
        tag = f"ha-{uuid.uuid4().hex[:6]}"
        prompts = [f"{tag}-{i}" for i in range(JOBS)]
        seen = Submissions()
        deadline = time.monotonic() + 60
        submitters = [
            threading.Thread(
                target=submit_all, args=(api_url, prompts[i::SUBMITTERS], seen, deadline)
            )
            for i in range(SUBMITTERS)
        ]
        client_prompts = [f"{tag}-client-{i}" for i in range(CLIENT_JOBS)]
        submitters.append(
            threading.Thread(target=submit_with_client, args=(api_url, client_prompts, seen))
        )
        for thread in submitters:
            thread.start()

        # Under load: submissions coming in, calls in flight, some jobs ended already.
        wait_until(lambda: len([r for r in sim.log() if tag in str(r.get("prompt"))]) >= 60)
        with seen.lock:
            ended_before = ended(store, list(seen.accepted.values()))
            old = cluster.kill_master()
            killed_at = time.monotonic()
        answered, first_ended = first_ending(store, seen, ended_before)
        new = cluster.master_node()
        for thread in submitters:
            thread.join(timeout=90)
        accepted = dict(seen.accepted)

        def records() -> list[dict[str, str]]:
            return [store.get(job_id) or {"status": "lost"} for job_id in accepted.values()]

        # A message a worker had taken off its queue when the master died, and could not
        # claim, leaves its job queued with no message: the sweeper enqueues it again after
        # the broker's visibility timeout (60 s) and 30 s more (workers.sweeper).
        with contextlib.suppress(TimeoutError):  # what never ended is counted below
            wait_until(lambda: all(r["status"] in TERMINAL for r in records()), timeout=120)
        final = records()
        # Flower follows the failover too: it shows a job run on the new master. (Events sent
        # before it had subscribed there again are lost, as in any Redis pub/sub outage.)
        headers = {"Authorization": f"Bearer {KEY1}"}
        probe = httpx.post(
            f"{api_url}/v1/jobs", json=chat_body(f"{tag}-probe"), headers=headers, timeout=10
        ).json()["id"]
        wait_until(lambda: probe in flower_successes(flower_url), timeout=30)
    finally:
        for proc in procs:
            proc.stop()
        store.redis.close()

    by_status = Counter(r["status"] for r in final)
    lost = [p for p, r in zip(accepted, final, strict=True) if r["status"] not in TERMINAL]
    calls = Counter(str(r.get("prompt")) for r in sim.log() if tag in str(r.get("prompt")))
    duplicates = sum(1 for n in calls.values() if n > 1)
    print(
        f"\nfailover under load: {JOBS} + {CLIENT_JOBS} (client) submitted, "
        f"{len(accepted)} accepted, "
        f"{sum(by_status[s] for s in TERMINAL)} ended ({dict(by_status)}), {len(lost)} lost; "
        f"answers {dict(seen.statuses)}; master {old.port} → {new.port}, answering "
        f"{answered - killed_at:.1f} s after the kill; first job ended there after "
        f"{first_ended - killed_at:.1f} s; "
        f"{duplicates} jobs called twice or more ({sum(calls.values())} calls for "
        f"{len(calls)} jobs)"
    )
    assert not lost, f"accepted jobs lost or never ended: {lost[:5]} {dict(by_status)}"
    everything = JOBS + CLIENT_JOBS
    assert len(accepted) == everything, "every submission is accepted once a master answers"
    assert by_status["succeeded"] == everything
    assert not [s for s in seen.statuses if s >= 500 and s != 503], seen.statuses
    assert seen.without_retry_after == 0


def test_a_submission_no_replica_confirms_answers_503(
    redis_url: str, redis_client: redis.Redis, simulator: SimulatorHandle
) -> None:
    """COURIER_REDIS_MIN_REPLICAS=1 on a Redis with no replica: the master has the job, but
    the API does not acknowledge it; a retry with the same Idempotency-Key finds that job
    (no second one). The client and the CLI resend for as long as they are told to."""
    env = {
        **stack_env_for(redis_url, simulator),
        "COURIER_REDIS_MIN_REPLICAS": "1",
        "COURIER_REDIS_REPLICA_TIMEOUT_S": "0.05",
    }
    api, api_url = start_api(env, name="api-replicas")
    headers = {"Authorization": f"Bearer {KEY1}", "Idempotency-Key": uuid.uuid4().hex}
    try:
        with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
            body = chat_body("unconfirmed", priority="low")
            for _ in range(2):
                answer = client.post("/v1/jobs", json=body)
                message = assert_error(answer, 503, "unavailable")
                assert answer.headers["retry-after"] == "1" and "replica" in message
            metrics = client.get("/metrics").text
            assert "courier_redis_replicas 0.0" in metrics
        key = keys.idempotency("t1", headers["Idempotency-Key"])
        first = redis_client.get(key)
        assert first and redis_client.hget(keys.job(first), "status") == "queued"
        # Its message was queued once (the replay queued nothing), and the mark says so.
        assert redis_client.hget(keys.job(first), "enqueued") == "1"
        messages = [
            m for name in keys.broker_lists(["jobs.low"]) for m in redis_client.lrange(name, 0, -1)
        ]
        assert sum(first in m for m in messages) == 1

        started = time.monotonic()
        with Courier(api_url, KEY1) as courier, pytest.raises(CourierAPIError) as refused:
            courier.submit("openai:gpt-4o-mini", prompt="unconfirmed", retry_s=1.5)
        assert refused.value.status == 503 and refused.value.retry_after == 1.0
        assert time.monotonic() - started >= 1.5  # sent again after each Retry-After
        cli = subprocess.run(
            [sys.executable, "-m", "producers.cli", "submit", "--model", "openai:gpt-4o-mini",
             "--prompt", "unconfirmed", "--retry-for", "1", "--api-url", api_url,
             "--api-key", KEY1],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 2 and '"unavailable"' in cli.stderr
    finally:
        api.stop()
        flush_queues(redis_url)
