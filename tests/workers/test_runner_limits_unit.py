"""The runner's limits through its seams: the circuit breaker (real, in Redis) sending jobs to
their next model or back to wait, and a fake rate limiter's refusals and grants. No worker
process and no waiting: each test takes milliseconds."""

from __future__ import annotations

from core.errors import (
    ProviderUnavailable,
)
from tests.support.runner_kit import (
    fallback,
    model,
    record,
    runner,
    scheduled_in,
    submit,
)
from tests.support.seams import (
    FakeLimiter,
    Grant,
)
from workers.runtime import Runtime

# ---- the circuit breaker ------------------------------------------------------------------


def test_an_open_circuit_sends_the_job_to_its_next_model(runtime: Runtime) -> None:
    m, f = model(), fallback()
    job_runner, providers, _ = runner(runtime, threshold=1)
    assert job_runner.breaker.record_failure(m)  # open

    outcome = job_runner.run(submit(runtime, m, fallback_models=[f]))

    assert (outcome.status, outcome.model, outcome.attempts) == ("succeeded", f, 1)
    assert providers.models == [f]


def test_an_open_circuit_with_no_model_left_makes_the_job_wait(runtime: Runtime) -> None:
    m = model()
    job_runner, providers, _ = runner(runtime, threshold=1, cooldown_s=30)
    job_runner.breaker.record_failure(m)
    job_id = submit(runtime, m)

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason) == ("requeued", "circuit_open")
    assert outcome.retry_in_s is not None and 29 < outcome.retry_in_s <= 30
    assert providers.models == []
    stored = record(runtime, job_id)
    assert stored["status"] == "queued" and stored["waiting_for"] == "circuit_open"
    assert stored["attempts"] == "0"  # the claim's count given back: no call was made
    assert 29 < scheduled_in(runtime, job_id) <= 30


def test_failures_open_the_circuit_for_the_next_jobs(runtime: Runtime) -> None:
    m, f = model(), fallback()
    job_runner, providers, _ = runner(runtime, {m: [ProviderUnavailable("503")] * 2}, threshold=2)
    assert job_runner.run(submit(runtime, m, max_attempts=2)).status == "failed"
    assert job_runner.breaker.open_for(m) > 0

    outcome = job_runner.run(submit(runtime, m, fallback_models=[f]))

    assert (outcome.status, outcome.model) == ("succeeded", f)
    assert providers.models == [m, m, f]  # the second job never called the open model


# ---- the rate limiter ---------------------------------------------------------------------


def test_a_limiter_refusal_requeues_the_job_with_limited_by(runtime: Runtime) -> None:
    m = model()
    limiter = FakeLimiter([Grant(granted=False, wait_s=7.5, reason="tokens")])
    job_runner, providers, _ = runner(runtime, limiter=limiter)
    job_id = submit(runtime, m, priority="high")

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason, outcome.limited_by) == (
        "requeued",
        "rate_limit",
        "tokens",
    )
    assert outcome.retry_in_s == 7.5
    assert providers.models == []
    assert limiter.reserved == [(m, "high", job_id)]  # its place in the limiter's line
    assert limiter.settled == []
    stored = record(runtime, job_id)
    assert (stored["status"], stored["waiting_for"], stored["attempts"]) == (
        "queued",
        "rate_limit",
        "0",
    )
    assert 7 < scheduled_in(runtime, job_id) <= 7.5


def test_each_grant_is_settled_with_what_the_call_did(runtime: Runtime) -> None:
    m = model()
    unavailable = ProviderUnavailable("502")
    limiter = FakeLimiter()
    job_runner, _, _ = runner(runtime, {m: [unavailable]}, limiter=limiter)
    assert job_runner.run(submit(runtime, m)).status == "succeeded"
    assert [(result is not None, error) for _, result, error in limiter.settled] == [
        (False, unavailable),
        (True, None),
    ]
    assert len(limiter.reserved) == 2
