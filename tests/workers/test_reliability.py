"""Retries, final errors, fallbacks, timeouts, expiry and the circuit breaker,
with a real worker process and the simulator's scripted faults."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.jobs import DirectProducer
from tests.support.procs import Proc
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker


@pytest.fixture(scope="module")
def worker(redis_url: str, simulator: SimulatorHandle) -> Iterator[Proc]:
    proc = start_worker(
        redis_url,
        simulator,
        # The streak breaker (the one before the rate breaker) keeps its own test here.
        env={
            "COURIER_BREAKER": "streak",
            "COURIER_BREAKER_THRESHOLD": "3",
            "COURIER_BREAKER_COOLDOWN_S": "2",
        },
    )
    yield proc
    proc.stop()


@pytest.fixture()
def producer(redis_url: str, worker: Proc) -> Iterator[DirectProducer]:
    p = DirectProducer(redis_url)
    yield p
    p.close()


def calls(sim: SimulatorHandle, tag: str) -> list[dict[str, object]]:
    return [r for r in sim.log() if tag in str(r.get("prompt", ""))]


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def test_retry_after_is_honoured(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("ratelimited")
    sim.faults([{"status": 429, "retry_after": 1}, {"status": 429, "retry_after": 1}], match=tag)
    job = producer.wait([producer.submit(tag)])[0]
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 3
    log = calls(sim, tag)
    assert [r["status"] for r in log] == [429, 429, 200]
    starts = [float(str(r["started"])) for r in log]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.95 for gap in gaps), gaps


def test_final_error_calls_once(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("bad-request")
    sim.faults([{"status": 400}] * 3, match=tag)
    job = producer.wait([producer.submit(tag)])[0]
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_request"
    assert job["error"]["retryable"] is False
    assert job["attempts"] == 1
    assert len(calls(sim, tag)) == 1


def test_auth_error_is_final(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("auth")
    sim.faults([{"status": 401}] * 3, match=tag)
    job = producer.wait([producer.submit(tag)])[0]
    assert job["error"]["type"] == "authentication"
    assert len(calls(sim, tag)) == 1


def test_persistent_503_fails_after_max_attempts(
    sim: SimulatorHandle, producer: DirectProducer
) -> None:
    tag = unique("unavailable")
    sim.faults([{"status": 503}] * 10, match=tag)
    model = f"openai:model-{tag}"
    job = producer.wait([producer.submit(tag, model, max_attempts=3)])[0]
    assert job["status"] == "failed"
    assert job["error"]["type"] == "provider_error"
    assert job["error"]["retryable"] is True
    assert job["attempts"] == 3
    assert len(calls(sim, tag)) == 3


def test_fallback_answers(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("fallback")
    primary = f"openai:primary-{tag}"
    sim.faults([{"status": 500}] * 2, match=primary.split(":")[1])
    job_id = producer.submit(
        tag, primary, max_attempts=2, fallback_models=["anthropic:claude-haiku-4-5"]
    )
    job = producer.wait([job_id])[0]
    assert job["status"] == "succeeded", job
    assert job["result"]["model"] == "anthropic:claude-haiku-4-5"
    assert job["attempts"] == 3
    assert [r["path"] for r in calls(sim, tag)] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/messages",
    ]


def test_hung_provider_times_out(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("hang")
    sim.faults([{"delay": 20}] * 2, match=tag)
    model = f"openai:hang-{tag}"
    job = producer.wait([producer.submit(tag, model, timeout_s=1, max_attempts=2)], timeout=30)[0]
    assert job["status"] == "failed"
    assert job["error"]["type"] == "timeout"
    assert job["attempts"] == 2


def test_expired_job_never_reaches_the_provider(
    sim: SimulatorHandle, producer: DirectProducer
) -> None:
    tag = unique("expired")
    job_id = producer.submit(tag, expires_at=time.time() + 0.3, enqueue=False)
    time.sleep(0.5)
    producer.submit(unique("nudge"))  # keep the worker busy with something else too
    job = producer.wait([job_id], timeout=15)[0]  # the sweeper expires it without a message
    assert job["status"] == "expired"
    assert job["error"]["type"] == "expired"
    assert calls(sim, tag) == []


def test_expired_in_queue_is_skipped_by_the_worker(
    sim: SimulatorHandle, producer: DirectProducer
) -> None:
    tag = unique("stale")
    job_id = producer.submit(tag, expires_at=time.time() - 1)
    job = producer.wait([job_id], timeout=15)[0]
    assert job["status"] == "expired"
    assert calls(sim, tag) == []


def test_circuit_opens_then_closes(sim: SimulatorHandle, producer: DirectProducer) -> None:
    tag = unique("breaker")
    model = f"openai:flaky-{tag}"
    sim.faults([{"status": 503}] * 3, match=model.split(":")[1])
    failed = producer.wait([producer.submit(f"{tag}-a", model, max_attempts=3)])[0]
    assert failed["status"] == "failed"
    # Open: the next job goes straight to its fallback without calling the model.
    job = producer.wait(
        [producer.submit(f"{tag}-b", model, fallback_models=["anthropic:claude-haiku-4-5"])]
    )[0]
    assert job["result"]["model"] == "anthropic:claude-haiku-4-5"
    assert [r["path"] for r in calls(sim, f"{tag}-b")] == ["/v1/messages"]
    # After the cool-down a call goes through again and closes the circuit.
    time.sleep(2.2)
    job = producer.wait([producer.submit(f"{tag}-c", model)])[0]
    assert job["status"] == "succeeded" and job["result"]["model"] == model
