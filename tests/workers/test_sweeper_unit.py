"""The sweeper (workers.sweeper.Sweeper) one sweep at a time, on the real job store, with
recording callables for what it hands on (job and callback messages, expiry hooks). No
threads and no waiting: time passing is written into the schedules."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from core import keys
from core.records import now_ms
from tests.support.jobs import job_fields
from tests.support.seams import make_runtime
from workers.runtime import Runtime
from workers.sweeper import Sweeper

PRIORITIES = ("high", "normal", "low")


@pytest.fixture()
def runtime(redis_client: redis.Redis) -> Runtime:
    """A runtime on schedules emptied of earlier tests' jobs: a sweep acts on every job."""
    redis_client.delete(
        keys.RUNNING,
        keys.SCHEDULED,
        keys.EXPIRIES,
        keys.SWEEPER_LOCK,
        *keys.QUEUED_ALL,
        *keys.broker_lists([f"jobs.{p}" for p in PRIORITIES]),
    )
    return make_runtime(redis_client, lease_ttl_s=20, priority_aging_s=300)


@dataclass
class Handed:
    """What a sweep handed on, through the callables the sweeper takes."""

    jobs: list[tuple[str, str]] = field(default_factory=list)
    callbacks: list[str] = field(default_factory=list)
    expired: list[tuple[str, bool]] = field(default_factory=list)
    restores: int = 0
    due_callbacks: list[str] = field(default_factory=list)

    def restore(self) -> None:
        self.restores += 1


def sweeper(runtime: Runtime, handed: Handed, **options: Any) -> Sweeper:
    return Sweeper(
        runtime,
        enqueue_job=lambda job_id, priority: handed.jobs.append((job_id, priority)),
        enqueue_callback=handed.callbacks.append,
        on_expired=lambda job_id, has_callback: handed.expired.append((job_id, has_callback)),
        due_callbacks=lambda: list(handed.due_callbacks),
        restore_messages=handed.restore,
        **options,
    )


def submit(runtime: Runtime, **options: Any) -> str:
    job_id, _ = runtime.store.create("t1", job_fields("Hi", **options))
    return job_id


def status(runtime: Runtime, job_id: str) -> str:
    return (runtime.store.get(job_id) or {}).get("status", "missing")


def test_a_lapsed_lease_is_handed_to_another_worker(runtime: Runtime) -> None:
    store = runtime.store
    lapsed, alive = submit(runtime), submit(runtime)
    assert store.claim(lapsed, "dead-worker", 0).status == "claimed"  # lease lapsed already
    assert store.claim(alive, "busy-worker", 20).status == "claimed"
    handed = Handed()

    counts = sweeper(runtime, handed).sweep_once()

    assert counts["recovered"] == 1
    assert handed.jobs == [(lapsed, "normal")]  # due at once: its message goes out this sweep
    record = store.get(lapsed) or {}
    assert (record["status"], record["waiting_for"], record["lease"]) == ("queued", "recovery", "")
    assert status(runtime, alive) == "running"
    # The dead worker's late answer is refused; the next worker's claim is not.
    assert store.finish(lapsed, "succeeded", token="dead-worker")[0] is False
    assert store.claim(lapsed, "next-worker", 20).status == "claimed"


def test_scheduled_jobs_are_enqueued_when_due_and_once(runtime: Runtime) -> None:
    store = runtime.store
    due, later = submit(runtime, priority="high"), submit(runtime, priority="low")
    for job_id in (due, later):
        store.claim(job_id, "tok", 20)
    store.requeue(due, "tok", 0, "retry")
    store.requeue(later, "tok", 60, "retry")
    handed = Handed()
    sweep = sweeper(runtime, handed)

    assert sweep.sweep_once()["enqueued"] == 1
    assert handed.jobs == [(due, "high")]  # on its own priority's queue
    # Kept on the schedule a while, in case the message is lost before a worker claims it;
    # not enqueued again by the next sweep.
    redo_in = (runtime.redis.zscore(keys.SCHEDULED, due) or 0) / 1000 - time.time()
    assert 290 < redo_in <= 300
    sweep.sweep_once()
    assert handed.jobs == [(due, "high")]
    assert store.claim(due, "worker", 20).status == "claimed"
    assert runtime.redis.zscore(keys.SCHEDULED, due) is None


def test_jobs_left_by_a_failed_enqueue_are_due_again_at_once(runtime: Runtime) -> None:
    store = runtime.store
    ids = [submit(runtime) for _ in range(3)]
    for job_id in ids:
        store.claim(job_id, "tok", 20)
        store.requeue(job_id, "tok", 0, "retry")
    handed = Handed()
    sweep = sweeper(runtime, handed)
    good_enqueue = sweep.enqueue_job

    def broker_down_after_one(job_id: str, priority: str) -> None:
        if handed.jobs:
            raise ConnectionError("broker unreachable")
        good_enqueue(job_id, priority)

    sweep.enqueue_job = broker_down_after_one
    sweep.sweep_once()
    assert len(handed.jobs) == 1

    sweep.enqueue_job = good_enqueue
    sweep.sweep_once()
    assert sorted(job_id for job_id, _ in handed.jobs) == sorted(ids)  # each one once


def test_queued_jobs_past_expires_at_expire(runtime: Runtime) -> None:
    past = time.time() - 1
    plain = submit(runtime, expires_at=past)
    with_callback = submit(runtime, expires_at=past, callback_url="https://hooks.example.com/c")
    not_yet = submit(runtime, expires_at=time.time() + 600)
    handed = Handed()

    assert sweeper(runtime, handed).sweep_once()["expired"] == 2

    assert sorted(handed.expired) == sorted([(plain, False), (with_callback, True)])
    for job_id in (plain, with_callback):
        record = runtime.store.get(job_id) or {}
        assert record["status"] == "expired"
        assert json.loads(record["error"]) == {
            "type": "expired",
            "message": "the job expired before it started",
            "retryable": False,
        }
        assert runtime.redis.zscore(keys.EXPIRIES, job_id) is None
    assert runtime.redis.zscore(keys.CALLBACKS_SCHEDULED, with_callback) is not None
    assert status(runtime, not_yet) == "queued"
    assert handed.jobs == []


def test_a_running_job_past_expires_at_is_left_to_its_worker(runtime: Runtime) -> None:
    job_id = submit(runtime, expires_at=time.time() + 600)
    runtime.store.claim(job_id, "tok", 20)
    runtime.redis.zadd(keys.EXPIRIES, {job_id: now_ms() - 1000})  # its time has come
    handed = Handed()

    assert sweeper(runtime, handed).sweep_once()["expired"] == 0

    assert handed.expired == []
    assert status(runtime, job_id) == "running"  # the runner's next attempt ends it
    assert runtime.redis.zscore(keys.EXPIRIES, job_id) is None  # not looked at again


def test_jobs_that_waited_too_long_move_one_queue_up(runtime: Runtime) -> None:
    low, normal = submit(runtime, priority="low"), submit(runtime, priority="normal")
    fresh = submit(runtime, priority="low")
    long_ago = now_ms() - 400_000  # older than priority_aging_s (300 s)
    runtime.redis.zadd(keys.queued("low"), {low: long_ago})
    runtime.redis.zadd(keys.queued("normal"), {normal: long_ago})
    handed = Handed()

    assert sweeper(runtime, handed).sweep_once()["aged"] == 2

    assert sorted(handed.jobs) == sorted([(normal, "high"), (low, "normal")])  # one step each
    assert runtime.redis.zscore(keys.queued("normal"), low) is not None
    assert runtime.redis.zscore(keys.queued("high"), normal) is not None
    assert runtime.redis.zscore(keys.queued("low"), fresh) is not None


def test_due_callbacks_are_enqueued(runtime: Runtime) -> None:
    handed = Handed(due_callbacks=["job_a", "job_b"])
    assert sweeper(runtime, handed).sweep_once()["callbacks"] == 2
    assert handed.callbacks == ["job_a", "job_b"]


def test_messages_are_restored_and_orphans_enqueued_every_few_sweeps(runtime: Runtime) -> None:
    orphan = submit(runtime, priority="low")  # queued, and its queue holds no message
    handed = Handed()
    sweep = sweeper(runtime, handed, restore_every=3, orphan_after_s=0.0)

    counts = [sweep.sweep_once()["orphans"] for _ in range(4)]

    assert handed.restores == 2  # sweeps 1 and 4
    assert counts == [1, 0, 0, 1]  # not enqueued again between restores
    assert handed.jobs == [(orphan, "low"), (orphan, "low")]


def test_orphans_are_left_alone_while_their_queue_holds_messages(runtime: Runtime) -> None:
    submit(runtime, priority="low")
    runtime.redis.rpush("jobs.low", "a message")
    handed = Handed()
    assert sweeper(runtime, handed, orphan_after_s=0.0).sweep_once()["orphans"] == 0
    assert handed.jobs == []


def test_one_sweeper_at_a_time(runtime: Runtime, redis_client: redis.Redis) -> None:
    one = sweeper(runtime, Handed())
    other = sweeper(make_runtime(redis_client), Handed())  # another worker process
    assert one.holds_lock() is True
    assert other.holds_lock() is False
    assert one.holds_lock() is True  # renewed by its holder
    redis_client.delete(keys.SWEEPER_LOCK)  # the holder died and its lock lapsed
    assert other.holds_lock() is True
