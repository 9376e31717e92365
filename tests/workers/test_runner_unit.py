"""The runner (workers.run.runner.JobRunner) through its seams: fake providers, a fake limiter
and a sleep that only records, on the real job store and circuit breaker in Redis. No worker
process and no waiting: each test takes milliseconds."""

from __future__ import annotations

import json
import time

from core import keys
from core.errors import (
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from core.results import ProviderResult
from tests.support.runner_kit import (
    cancel,
    due_now,
    error_of,
    fallback,
    model,
    record,
    runner,
    scheduled_in,
    submit,
)
from tests.support.seams import (
    FakeLimiter,
    FakeSleep,
    Step,
    answer,
)
from workers.run.retry import RetryPolicy
from workers.runtime import Runtime

# ---- answers and final errors -------------------------------------------------------------


def test_an_answer_ends_the_job_succeeded(runtime: Runtime) -> None:
    m = model()
    job_runner, providers, sleep = runner(runtime)
    job_id = submit(runtime, m)

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.model, outcome.attempts) == ("succeeded", m, 1)
    assert outcome.has_callback is False and outcome.tenant == "t1"
    stored = record(runtime, job_id)
    assert stored["status"] == "succeeded" and stored["attempts"] == "1" and stored["lease"] == ""
    assert json.loads(stored["result"])["output"] == "ok"
    assert json.loads(stored["result"])["model"] == m
    assert [(c.model, c.kind, c.timeout) for c in providers.calls] == [(m, "chat", 30.0)]
    assert sleep.delays == []
    assert runtime.redis.zscore(keys.RUNNING, job_id) is None
    assert runtime.leases.snapshot() == {}


def test_an_ended_job_with_a_callback_url_says_its_webhook_is_due(runtime: Runtime) -> None:
    job_runner, _, _ = runner(runtime)
    job_id = submit(runtime, model(), callback_url="https://hooks.example.com/courier")
    outcome = job_runner.run(job_id)
    assert outcome.status == "succeeded" and outcome.has_callback is True
    assert json.loads(record(runtime, job_id)["callback"])["status"] == "pending"
    assert runtime.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is not None


def test_an_embedding_job_calls_embed(runtime: Runtime) -> None:
    m = model("embed")
    job_runner, providers, _ = runner(runtime)
    job_id = submit(runtime, m, kind="embedding", request={"input": ["a", "b"]})
    assert job_runner.run(job_id).status == "succeeded"
    assert [(c.kind, dict(c.request)) for c in providers.calls] == [
        ("embedding", {"input": ["a", "b"]})
    ]


def test_a_final_error_fails_the_job_at_once(runtime: Runtime) -> None:
    m, f = model(), fallback()
    job_runner, providers, sleep = runner(runtime, {m: [InvalidRequest("unknown field 'x'")]})
    job_id = submit(runtime, m, fallback_models=[f])

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason, outcome.attempts) == ("failed", "invalid_request", 1)
    assert error_of(runtime, job_id) == {
        "type": "invalid_request",
        "message": "unknown field 'x'",
        "retryable": False,
    }
    assert providers.models == [m]  # no retry, no fallback
    assert sleep.delays == []
    assert not runtime.redis.exists(keys.breaker(m))  # the provider is not the one at fault


def test_an_unexpected_exception_fails_the_job_as_internal(runtime: Runtime) -> None:
    m = model()

    def bug() -> ProviderResult:
        raise ValueError("a bug")

    job_runner, _, _ = runner(runtime, {m: [bug]})
    job_id = submit(runtime, m)
    outcome = job_runner.run(job_id)
    assert (outcome.status, outcome.reason) == ("failed", "internal")
    assert error_of(runtime, job_id)["message"] == "internal error: ValueError"
    assert runtime.leases.snapshot() == {}


# ---- retries ----------------------------------------------------------------------------


def test_short_backoffs_are_slept_in_place_within_the_policy(runtime: Runtime) -> None:
    m = model()
    errors: list[Step] = [
        ProviderUnavailable("502"),
        ProviderUnavailable("503"),
        ProviderTimeout("slow"),
    ]
    job_runner, providers, sleep = runner(runtime, {m: errors}, threshold=10)
    job_id = submit(runtime, m)

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.attempts) == ("succeeded", 4)
    assert providers.models == [m] * 4
    # Full jitter under RetryPolicy(base_s=0.5, cap_s=2.0): ceilings 0.5, 1, 2.
    assert len(sleep.delays) == 3
    for delay, ceiling in zip(sleep.delays, (0.5, 1.0, 2.0), strict=True):
        assert 0 <= delay <= ceiling
    assert record(runtime, job_id)["attempts"] == "4"
    assert not runtime.redis.exists(keys.breaker(m))  # the answer closed the circuit again


def test_retry_after_sets_the_wait(runtime: Runtime) -> None:
    m = model()
    job_runner, _, sleep = runner(
        runtime,
        {m: [RateLimited("slow down", retry_after=2.5)]},
        policy=RetryPolicy(base_s=0.001, cap_s=0.001),
    )
    assert job_runner.run(submit(runtime, m)).status == "succeeded"
    assert sleep.delays == [2.5]


def test_a_long_wait_hands_the_job_back_to_the_schedule(runtime: Runtime) -> None:
    m, f = model(), fallback()
    job_runner, providers, sleep = runner(
        runtime,
        {m: [RateLimited("quota", retry_after=45), RateLimited("quota", retry_after=45)]},
    )
    job_id = submit(runtime, m, max_attempts=2, fallback_models=[f])

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason, outcome.retry_in_s) == ("requeued", "retry", 45.0)
    assert sleep.delays == []  # no worker slot held for 45 s
    stored = record(runtime, job_id)
    assert stored["status"] == "queued" and stored["waiting_for"] == "retry"
    assert (stored["route_index"], stored["route_failures"], stored["attempts"]) == ("0", "1", "1")
    assert json.loads(stored["last_error"])["type"] == "rate_limited"
    assert 44 < scheduled_in(runtime, job_id) <= 45
    assert runtime.store.claim(job_id, "too-early", 20).status == "scheduled"

    # Its time comes: the run goes on where it stopped (one failure of two on the primary).
    due_now(runtime, job_id)
    outcome = job_runner.run(job_id)
    assert (outcome.status, outcome.model, outcome.attempts) == ("succeeded", f, 3)
    assert providers.models == [m, m, f]


# ---- the route: fallbacks, exhaustion -----------------------------------------------------


def test_max_attempts_then_the_fallback_answers(runtime: Runtime) -> None:
    m, f = model(), fallback()
    job_runner, providers, sleep = runner(
        runtime, {m: [ProviderUnavailable("500"), ProviderUnavailable("500")]}
    )
    job_id = submit(runtime, m, max_attempts=2, fallback_models=[f])

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.model, outcome.attempts) == ("succeeded", f, 3)
    assert providers.models == [m, m, f]
    assert len(sleep.delays) == 1  # between the primary's calls; none to switch models
    assert json.loads(record(runtime, job_id)["result"])["model"] == f


def test_every_model_exhausted_fails_with_the_last_error(runtime: Runtime) -> None:
    m, f = model(), fallback()
    scripts: dict[str, list[Step]] = {
        m: [ProviderUnavailable("500")] * 2,
        f: [RateLimited("quota", retry_after=0.5)] * 2,
    }
    job_runner, providers, sleep = runner(runtime, scripts)
    job_id = submit(runtime, m, max_attempts=2, fallback_models=[f])

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason) == ("failed", "rate_limited")
    assert providers.models == [m, m, f, f]
    assert len(sleep.delays) == 2
    assert error_of(runtime, job_id) == {
        "type": "rate_limited",
        "message": "quota",
        "retryable": True,
    }
    assert record(runtime, job_id)["attempts"] == "4"


# ---- the lease, and jobs that are not this run's -------------------------------------------


def test_a_lease_lost_during_a_backoff_stops_the_run(runtime: Runtime) -> None:
    m = model()
    limiter = FakeLimiter()
    job_id = submit(runtime, m)
    sleep = FakeSleep(then=lambda _: cancel(runtime, job_id))
    job_runner, providers, _ = runner(
        runtime, {m: [ProviderUnavailable("502")]}, limiter=limiter, sleep=sleep
    )

    outcome = job_runner.run(job_id)

    assert (outcome.status, outcome.reason) == ("skipped", "lease_lost")
    assert providers.models == [m]
    assert record(runtime, job_id)["status"] == "cancelled"
    assert limiter.settled[-1][1:] == (None, None)  # the unused grant given back
    assert runtime.leases.snapshot() == {}


def test_an_answer_for_a_job_ended_meanwhile_is_dropped(runtime: Runtime) -> None:
    m = model()
    job_id = submit(runtime, m)

    def cancelled_mid_call() -> ProviderResult:
        cancel(runtime, job_id)
        return answer(m)

    job_runner, _, _ = runner(runtime, {m: [cancelled_mid_call]})
    outcome = job_runner.run(job_id)
    assert (outcome.status, outcome.reason) == ("skipped", "ended_elsewhere")
    stored = record(runtime, job_id)
    assert stored["status"] == "cancelled" and not stored.get("result")


def test_a_job_running_elsewhere_or_ended_is_skipped(runtime: Runtime) -> None:
    job_runner, providers, _ = runner(runtime)
    running = submit(runtime, model())
    assert runtime.store.claim(running, "another-worker", 20).status == "claimed"
    ended = submit(runtime, model())
    cancel(runtime, ended)

    outcome = job_runner.run(running)
    assert (outcome.status, outcome.reason) == ("skipped", "running")
    assert job_runner.run(ended).reason == "cancelled"
    assert job_runner.run("job_missing").reason == "missing"
    assert providers.calls == []
    assert record(runtime, running)["lease"] == "another-worker"


# ---- expiry -------------------------------------------------------------------------------


def test_a_job_expired_before_its_claim_never_reaches_the_provider(runtime: Runtime) -> None:
    job_runner, providers, _ = runner(runtime)
    job_id = submit(runtime, model(), expires_at=time.time() - 1)

    outcome = job_runner.run(job_id)

    assert outcome.status == "expired"
    assert providers.calls == []
    assert record(runtime, job_id)["status"] == "expired"
    assert error_of(runtime, job_id)["type"] == "expired"
    assert runtime.redis.zscore(keys.EXPIRIES, job_id) is None


def test_a_job_that_expires_during_a_backoff_ends_expired(runtime: Runtime) -> None:
    m = model()
    limiter = FakeLimiter()
    job_id = submit(runtime, m, expires_at=time.time() + 600)

    def time_passes(_: float) -> None:
        runtime.redis.hset(keys.job(job_id), "expires_at", str(time.time() - 1))

    job_runner, providers, _ = runner(
        runtime, {m: [ProviderUnavailable("502")]}, limiter=limiter, sleep=FakeSleep(time_passes)
    )
    outcome = job_runner.run(job_id)

    assert outcome.status == "expired"
    assert providers.models == [m]
    assert record(runtime, job_id)["status"] == "expired"
    assert limiter.settled[-1][1:] == (None, None)


def test_a_call_never_outlives_the_job(runtime: Runtime) -> None:
    job_runner, providers, _ = runner(runtime)
    job_id = submit(runtime, model(), timeout_s=30, expires_at=time.time() + 5)
    assert job_runner.run(job_id).status == "succeeded"
    assert 4 < providers.calls[0].timeout <= 5
