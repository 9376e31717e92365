"""What the runner's seam tests share: a model of their own per test, a job submitted on the
real store, a :class:`JobRunner` on fake providers and sleep, and looks at the job's record."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis

from core import keys
from tests.support.jobs import job_fields
from tests.support.seams import FakeLimiter, FakeProviders, FakeSleep, Step, make_runtime
from workers.run.breaker import StreakBreaker
from workers.run.retry import RetryPolicy
from workers.run.runner import JobRunner
from workers.runtime import Runtime


@pytest.fixture()
def runtime(redis_client: redis.Redis) -> Runtime:
    """The runtime the seam tests run on (real Redis, fakes elsewhere)."""
    return make_runtime(redis_client, lease_ttl_s=20, provider_timeout_s=30)


def model(label: str = "m") -> str:
    """A model of its own per test: circuit state in Redis outlives a test."""
    return f"openai:{label}-{uuid.uuid4().hex[:8]}"


def fallback(label: str = "f") -> str:
    return f"anthropic:{label}-{uuid.uuid4().hex[:8]}"


def submit(runtime: Runtime, primary: str, **options: Any) -> str:
    job_id, _ = runtime.store.create("t1", job_fields("Hi", primary, **options))
    return job_id


def record(runtime: Runtime, job_id: str) -> dict[str, str]:
    found = runtime.store.get(job_id)
    assert found is not None, job_id
    return found


def error_of(runtime: Runtime, job_id: str) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(record(runtime, job_id)["error"])
    return error


def runner(
    runtime: Runtime,
    scripts: dict[str, list[Step]] | None = None,
    *,
    limiter: FakeLimiter | None = None,
    sleep: FakeSleep | None = None,
    policy: RetryPolicy | None = None,
    threshold: int = 5,
    cooldown_s: float = 30.0,
) -> tuple[JobRunner, FakeProviders, FakeSleep]:
    providers, sleep = FakeProviders(scripts), sleep or FakeSleep()
    job_runner = JobRunner(
        runtime=runtime,
        get_provider=providers,
        breaker=StreakBreaker(runtime.redis, threshold=threshold, cooldown_s=cooldown_s),
        limiter=limiter,
        policy=policy or RetryPolicy(base_s=0.5, cap_s=2.0),
        sleep=sleep,
    )
    return job_runner, providers, sleep


def scheduled_in(runtime: Runtime, job_id: str) -> float:
    """Seconds from now until the schedule hands the job out again."""
    score = runtime.redis.zscore(keys.SCHEDULED, job_id)
    assert score is not None, f"{job_id} is not scheduled"
    return float(score) / 1000 - time.time()


def due_now(runtime: Runtime, job_id: str) -> None:
    """The wait a requeue set is over (as if its time had come)."""
    runtime.redis.hset(keys.job(job_id), "not_before", "0")


def cancel(runtime: Runtime, job_id: str) -> None:
    assert runtime.store.finish(job_id, "cancelled", allowed=("queued", "running"))[0]
