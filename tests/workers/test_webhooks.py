"""Webhook delivery: signatures that standardwebhooks and svix verify, retries, 410, no
redirects, timeouts, redelivery, truncation, every end status, and a receiver that comes
back after an outage. The first half drives a sender in the test process (its own Redis
DB); the second a real worker with a shortened schedule, against a real receiver."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import standardwebhooks

from config.settings import Settings
from core import keys
from core.callbacks import (
    MAX_RETRY_AFTER_EXTRA_S,
    CallbackSchedule,
    dead_letters,
    next_delay,
    redeliver,
)
from core.queues import enqueue_callback
from core.retry_after import retry_after_seconds as parse_retry_after
from core.signing import event_id, generate_secret, signing_secrets
from core.store import JobStore
from tests.conftest import REDIS_HOST, REDIS_PORT, _claim_redis_db
from tests.support.jobs import DirectProducer
from tests.support.procs import Proc, wait_until
from tests.support.receiver import Receiver
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker
from workers.webhooks import WebhookSender, build_client

SECRET = generate_secret()
PREVIOUS = generate_secret()
MESSAGE = {"role": "assistant", "content": "the reply", "tool_calls": []}
USAGE = {"input_tokens": 3, "output_tokens": 2}
RESULT: dict[str, Any] = {"output": "the reply", "message": MESSAGE, "embeddings": None}
RESULT["finish_reason"] = "stop"
RESULT |= {"usage": USAGE, "model": "openai:gpt-4o-mini", "latency_ms": 5}


def unique(label: str) -> str:
    return f"/{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


# ---- a sender in the test process ------------------------------------------------------


@pytest.fixture(scope="module")
def own_redis() -> Iterator[redis.Redis]:
    """A Redis DB of its own, so the worker below never sees these jobs."""
    db = _claim_redis_db()
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, decode_responses=True)
    yield client
    client.flushdb()
    client.close()


@pytest.fixture()
def store(own_redis: redis.Redis) -> JobStore:
    return JobStore(own_redis, retention_s=600)


def make_sender(store: JobStore, **settings: Any) -> WebhookSender:
    defaults = {"webhook_secret": SECRET, "callback_retry_schedule": (0.2, 0.2, 0.2)}
    config = Settings(**(defaults | {"callback_timeout_s": 1.0} | settings))
    client = build_client(True, config.callback_timeout_s)
    return WebhookSender(store, config, client, rand=random.Random(7))


def finished(store: JobStore, url: str, status: str = "succeeded", **fields: Any) -> str:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    job = {"model": "openai:gpt-4o-mini", "priority": "normal", "request": request}
    job_id, _ = store.create("t1", job | {"metadata": {"order": 42}, "callback_url": url})
    extra = {"result": RESULT} if status == "succeeded" else {"error": {"type": status}}
    ended, _, due = store.finish(job_id, status, allowed=("queued",), fields=extra | fields)
    assert ended and due
    return job_id


def callback(store: JobStore, job_id: str) -> dict[str, Any]:
    record = store.get(job_id)
    assert record is not None
    state: dict[str, Any] = json.loads(record["callback"])
    return state


def test_event_is_signed_and_verifies(store: JobStore, receiver: Receiver) -> None:
    path = unique("signed")
    job_id = finished(store, receiver.url(path))
    outcome = make_sender(store).deliver(job_id)
    assert outcome.status == "delivered"
    (got,) = receiver.received(path)
    event = got.verify(SECRET)
    assert event["type"] == "job.succeeded" and event["timestamp"].endswith("Z")
    data = event["data"]
    assert (data["id"], data["result"], data["metadata"]) == (job_id, RESULT, {"order": 42})
    assert got.headers["webhook-id"] == event_id(job_id, "succeeded")
    assert got.headers["content-type"] == "application/json"
    assert "Courier" in got.headers["user-agent"]
    assert got.headers["webhook-signature"].startswith("v1,")
    state = callback(store, job_id)
    assert (state["status"], state["attempts"], state["last_status_code"]) == ("delivered", 1, 200)
    assert state["next_attempt_at"] is None
    assert (state["log"][0]["status_code"], state["log"][0]["response"]) == (200, "ok")
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is None


def test_rotation_sends_two_signatures(store: JobStore, receiver: Receiver) -> None:
    path = unique("rotation")
    job_id = finished(store, receiver.url(path))
    make_sender(store, webhook_secret_previous=PREVIOUS).deliver(job_id)
    (got,) = receiver.received(path)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    got.verify(SECRET)
    got.verify(PREVIOUS)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(generate_secret()).verify(got.body, got.headers)


def test_generated_secret_is_shared(own_redis: redis.Redis) -> None:
    own_redis.delete(keys.WEBHOOK_SECRET)
    first = signing_secrets(None, None, own_redis)
    again = signing_secrets(None, None, own_redis)
    assert first == again and first[0].startswith("whsec_")
    assert own_redis.get(keys.WEBHOOK_SECRET) == first[0]
    assert len(standardwebhooks.Webhook(first[0])._whsecret) >= 24
    assert signing_secrets(SECRET, PREVIOUS, own_redis) == [SECRET, PREVIOUS]


def test_retries_then_gives_up(store: JobStore, receiver: Receiver) -> None:
    path = unique("always-500")
    receiver.script(path, [{"status": 500}] * 4)
    job_id = finished(store, receiver.url(path))
    sender = make_sender(store)
    before = dead_letters(store.redis)
    outcomes = []
    for _ in range(4):
        outcomes.append(sender.deliver(job_id))
        if outcomes[-1].status == "pending":
            assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is not None
            assert callback(store, job_id)["next_attempt_at"] is not None
    assert [o.status for o in outcomes] == ["pending", "pending", "pending", "failed"]
    assert sender.deliver(job_id).status == "skipped"
    state = callback(store, job_id)
    assert state["status"] == "failed" and state["attempts"] == 4
    assert [e["status_code"] for e in state["log"]] == [500] * 4
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is None
    assert dead_letters(store.redis) == before + 1
    ids = {r.headers["webhook-id"] for r in receiver.received(path)}
    assert ids == {event_id(job_id, "succeeded")}


def test_410_stops_at_once(store: JobStore, receiver: Receiver) -> None:
    path = unique("gone")
    receiver.script(path, [{"status": 410}])
    job_id = finished(store, receiver.url(path))
    outcome = make_sender(store).deliver(job_id)
    assert outcome.status == "failed"
    state = callback(store, job_id)
    assert state["attempts"] == 1 and state["last_status_code"] == 410
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is None


def test_redirect_is_not_followed(store: JobStore, receiver: Receiver) -> None:
    path = unique("redirect")
    receiver.script(path, [{"status": 302, "headers": {"Location": path + "/next"}}])
    job_id = finished(store, receiver.url(path))
    outcome = make_sender(store).deliver(job_id)
    assert outcome.status == "pending"
    assert receiver.received(path + "/next") == []
    assert "not followed" in callback(store, job_id)["log"][0]["error"]


def test_timeout_and_refused_connection_are_retried(store: JobStore, receiver: Receiver) -> None:
    path = unique("slow")
    receiver.script(path, [{"delay": 5}])
    job_id = finished(store, receiver.url(path))
    sender = make_sender(store)
    started = time.monotonic()
    assert sender.deliver(job_id).status == "pending"
    assert time.monotonic() - started < 4
    assert "timed out" in callback(store, job_id)["log"][0]["error"]
    assert sender.deliver(job_id).status == "delivered"

    dead = Receiver().start()
    dead.stop()
    job_id = finished(store, dead.url("/nobody"))
    assert sender.deliver(job_id).status == "pending"
    entry = callback(store, job_id)["log"][0]
    assert entry["status_code"] is None and "ConnectError" in entry["error"]


def test_retry_after_is_honoured_within_bounds(store: JobStore, receiver: Receiver) -> None:
    path = unique("retry-after")
    receiver.script(path, [{"status": 503, "headers": {"Retry-After": "30"}}])
    job_id = finished(store, receiver.url(path))
    outcome = make_sender(store).deliver(job_id)
    assert outcome.next_attempt_at is not None
    assert 29 <= outcome.next_attempt_at - time.time() <= 31
    assert make_sender(store).deliver(job_id).status == "skipped"  # not due yet
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    rand = random.Random(1)
    plain = [next_delay((10.0,), 1, None, rand) or 0 for _ in range(50)]
    assert min(plain) >= 8 and max(plain) <= 12  # ±20 % jitter
    assert 8 <= (next_delay((10.0,), 1, 1.0, rand) or 0) <= 12  # never sooner
    assert 3600 < (next_delay((10.0,), 1, 1e9, rand) or 0) <= 12 + MAX_RETRY_AFTER_EXTRA_S
    assert next_delay((10.0,), 2) is None


def test_one_delivery_at_a_time(store: JobStore, receiver: Receiver) -> None:
    job_id = finished(store, receiver.url(unique("locked")))
    store.redis.set(keys.callback_lock(job_id), "someone-else", px=5000)
    assert make_sender(store).deliver(job_id).status == "skipped"
    store.redis.delete(keys.callback_lock(job_id))
    assert make_sender(store).deliver(job_id).status == "delivered"


def test_large_result_is_truncated(store: JobStore, receiver: Receiver) -> None:
    path = unique("big")
    big = {**RESULT, "output": "é" * 5000, "message": {"role": "assistant", "content": "x" * 5000}}
    job_id = finished(store, receiver.url(path), result=big)
    make_sender(store, callback_max_payload_bytes=2048).deliver(job_id)
    (got,) = receiver.received(path)
    assert len(got.body) <= 2048
    data = got.verify(SECRET)["data"]
    assert data["truncated"] is True
    assert data["result"]["truncated"] is True
    assert 0 < len(data["result"]["output"]) < 5000
    assert data["result"]["usage"] == RESULT["usage"]
    assert callback(store, job_id)["log"][0]["truncated"] is True


def test_redeliver_keeps_the_webhook_id(store: JobStore, receiver: Receiver) -> None:
    path = unique("redeliver")
    job_id = finished(store, receiver.url(path), status="failed")
    sender = make_sender(store)
    assert sender.deliver(job_id).status == "delivered"
    view = redeliver(store, job_id)
    assert view["callback"]["status"] == "pending"
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id) is not None
    assert sender.deliver(job_id).status == "delivered"
    first, second = receiver.received(path)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert second.verify(SECRET)["type"] == "job.failed"
    assert callback(store, job_id)["attempts"] == 2


def test_due_callbacks_keep_a_redo_score(store: JobStore, receiver: Receiver) -> None:
    job_id = finished(store, receiver.url(unique("due")))
    store.redis.zadd(keys.CALLBACKS_SCHEDULED, {job_id: 1, "job_gone": 1})
    due = CallbackSchedule(store.redis, redo_s=60).due()
    assert job_id in due and "job_gone" not in due
    score = store.redis.zscore(keys.CALLBACKS_SCHEDULED, job_id)
    assert score is not None and score > time.time() * 1000 + 50_000
    assert store.redis.zscore(keys.CALLBACKS_SCHEDULED, "job_gone") is None
    store.redis.zrem(keys.CALLBACKS_SCHEDULED, job_id)


# ---- a real worker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(redis_url: str, simulator: SimulatorHandle) -> Iterator[Proc]:
    proc = start_worker(
        redis_url,
        simulator,
        env={
            "COURIER_WEBHOOK_SECRET": SECRET,
            "COURIER_CALLBACK_RETRY_SCHEDULE": "0.2,0.2,0.5,1,2,3",
            "COURIER_CALLBACK_TIMEOUT_S": "1",
            "COURIER_SWEEP_INTERVAL_S": "0.2",
        },
    )
    yield proc
    proc.stop()


@pytest.fixture()
def producer(redis_url: str, worker: Proc) -> Iterator[DirectProducer]:
    p = DirectProducer(redis_url)
    yield p
    p.close()


def settled(producer: DirectProducer, job_id: str, timeout: float = 20) -> dict[str, Any]:
    """The job's callback state once it is delivered or failed."""
    wait_until(
        lambda: producer.job(job_id)["callback"]["status"] in ("delivered", "failed"), timeout
    )
    state: dict[str, Any] = producer.job(job_id)["callback"]
    return state


def test_worker_retries_500_503_then_200(producer: DirectProducer, receiver: Receiver) -> None:
    path = unique("worker-retry")
    receiver.script(path, [{"status": 500}, {"status": 503}])
    job_id = producer.submit("hello webhooks", callback_url=receiver.url(path))
    assert producer.wait([job_id])[0]["status"] == "succeeded"
    received = receiver.wait_for(path, 3)
    events = [r.verify(SECRET) for r in received]
    assert {e["type"] for e in events} == {"job.succeeded"}
    assert {r.headers["webhook-id"] for r in received} == {event_id(job_id, "succeeded")}
    stamps = [int(r.headers["webhook-timestamp"]) for r in received]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < 60
    state = settled(producer, job_id)
    assert state["status"] == "delivered" and state["attempts"] == 3
    assert [e["status_code"] for e in state["log"]] == [500, 503, 200]
    time.sleep(0.5)
    assert len(receiver.received(path)) == 3


def test_worker_410_and_timeout(producer: DirectProducer, receiver: Receiver) -> None:
    gone, slow = unique("worker-gone"), unique("worker-slow")
    receiver.script(gone, [{"status": 410}])
    receiver.script(slow, [{"delay": 4}])
    gone_id = producer.submit("gone", callback_url=receiver.url(gone))
    slow_id = producer.submit("slow", callback_url=receiver.url(slow))
    state = settled(producer, gone_id)
    assert state["status"] == "failed" and state["attempts"] == 1
    state = settled(producer, slow_id)
    assert state["status"] == "delivered" and state["attempts"] == 2
    assert "timed out" in state["log"][0]["error"]
    assert len(receiver.received(gone)) == 1


def test_every_end_status_sends_its_event(
    producer: DirectProducer, receiver: Receiver, sim: SimulatorHandle
) -> None:
    tag = f"bad-{uuid.uuid4().hex[:8]}"
    sim.faults([{"status": 400}], match=tag)
    paths = {s: unique(f"end-{s}") for s in ("failed", "cancelled", "expired")}
    failed_id = producer.submit(tag, callback_url=receiver.url(paths["failed"]))
    cancelled_url = receiver.url(paths["cancelled"])
    cancelled_id = producer.submit("never runs", enqueue=False, callback_url=cancelled_url)
    error = {"type": "cancelled", "message": "by test", "retryable": False}
    _, _, due = producer.store.finish(
        cancelled_id, "cancelled", allowed=("queued",), fields={"error": error}
    )
    assert due
    enqueue_callback(producer.celery, cancelled_id)
    past, expired_url = time.time() - 1, receiver.url(paths["expired"])
    expired_id = producer.submit("late", enqueue=False, expires_at=past, callback_url=expired_url)
    ids = {"failed": failed_id, "cancelled": cancelled_id, "expired": expired_id}
    for status, job_id in ids.items():
        (got,) = receiver.wait_for(paths[status], 1)
        event = got.verify(SECRET)
        assert event["type"] == f"job.{status}"
        assert event["data"]["id"] == job_id
        assert event["data"]["status"] == status
        assert settled(producer, job_id)["status"] == "delivered"


def test_worker_redeliver(producer: DirectProducer, receiver: Receiver) -> None:
    path = unique("worker-redeliver")
    job_id = producer.submit("again", callback_url=receiver.url(path))
    assert settled(producer, job_id)["status"] == "delivered"
    redeliver(producer.store, job_id, enqueue=lambda j: enqueue_callback(producer.celery, j))
    first, second = receiver.wait_for(path, 2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    second.verify(SECRET)
    wait_until(lambda: producer.job(job_id)["callback"]["attempts"] == 2)
    assert settled(producer, job_id)["status"] == "delivered"


def test_receiver_down_then_back(producer: DirectProducer) -> None:
    down = Receiver().start()
    down.stop()  # the port is known; nothing listens on it
    stopped = time.monotonic()
    job_ids = [producer.submit(f"outage {i}", callback_url=down.url("/outage")) for i in range(5)]
    producer.wait(job_ids)
    wait_until(lambda: all(producer.job(j)["callback"]["attempts"] >= 1 for j in job_ids))
    time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped)))
    down.start()
    try:
        received = down.wait_for("/outage", 5, timeout=30)
        for job_id in job_ids:
            assert settled(producer, job_id)["status"] == "delivered"
        time.sleep(0.5)
        ids = [r.headers["webhook-id"] for r in down.received("/outage")]
        assert sorted(ids) == sorted(event_id(j, "succeeded") for j in job_ids)
        assert all(r.verify(SECRET)["type"] == "job.succeeded" for r in received)
    finally:
        down.stop()
