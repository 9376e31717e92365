"""Courier's job intake (tasks/intake.py): one Lua script takes a job's message off its queue
and claims the job. Against real Redis with the messages Celery's producer writes, and with a
real gevent worker and the simulator."""

from __future__ import annotations

import json
import time
import uuid

import redis
from prometheus_client import CollectorRegistry

from core import keys
from core.claims import Taken
from core.fair import FairTake, held
from producers.api.collectors import ClusterCollector
from tests.support.jobs import DirectProducer
from tests.support.procs import wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import sigterm_and_wait, start_worker

pytest_plugins = ["tests.support.fixtures"]

QUEUES = ["jobs.high", "jobs.normal", "jobs.low"]
ALL_LISTS = keys.broker_lists(QUEUES)


def take(producer: DirectProducer, token: str, message: str = "", source: str = "") -> Taken | None:
    return FairTake(producer.redis).take(QUEUES, token, 10, message, source)


def messages_left(client: redis.Redis) -> int:
    """On the broker's lists, in kombu's unacked record, or sorted into tenant lists."""
    lists = sum(int(client.llen(name)) for name in ALL_LISTS) + int(client.hlen("unacked"))
    return lists + sum(held(client, ["high", "normal", "low"]).values())


def test_take_claims_the_first_job_in_priority_order(producer: DirectProducer) -> None:
    low = producer.submit("take low", priority="low")
    normal = producer.submit("take normal")
    high = producer.submit("take high", priority="high")
    taken_in_order = []
    while (taken := take(producer, f"tok-{len(taken_in_order)}")) is not None:
        assert taken.claim.status == "claimed" and taken.claim.record is not None
        assert taken.argsrepr == f"['{taken.job_id}']" and taken.task_id
        taken_in_order.append(taken.job_id)
    assert taken_in_order == [high, normal, low]
    assert [producer.job(j)["status"] for j in taken_in_order] == ["running"] * 3
    # The lease covers each job now: no copy of its message is kept anywhere.
    assert messages_left(producer.redis) == 0
    assert producer.redis.zcard(keys.RUNNING) == 3


def test_a_message_whose_job_ended_is_taken_and_not_run(producer: DirectProducer) -> None:
    job_id = producer.submit("cancelled before its turn")
    producer.store.finish(job_id, "cancelled", allowed=("queued",))
    taken = take(producer, "tok")
    assert taken is not None and taken.job_id == job_id
    assert taken.claim.status == "cancelled" and taken.claim.record is None
    assert take(producer, "tok") is None  # nothing else queued


def test_a_message_already_popped_is_claimed(producer: DirectProducer) -> None:
    job_id = producer.submit("popped by BRPOP first")
    popped = producer.redis.brpop(ALL_LISTS, timeout=1)
    assert popped is not None
    taken = take(producer, "tok", popped[1], popped[0])
    assert taken is not None and taken.job_id == job_id and taken.claim.status == "claimed"


def test_a_message_naming_no_job_is_set_aside(producer: DirectProducer) -> None:
    producer.celery.send_task("courier.not_a_job", args=["x"], queue="jobs.normal")
    taken = take(producer, "tok")
    assert taken is not None and taken.job_id == "" and taken.task_id
    (kept,) = producer.redis.lrange(keys.SET_ASIDE, 0, -1)
    assert json.loads(kept)["headers"]["task"] == "courier.not_a_job"


def test_a_worker_sets_a_foreign_message_aside_and_runs_the_jobs_behind_it(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=0.05)
    tag = uuid.uuid4().hex[:6]
    producer.celery.send_task("courier.not_a_job", args=["x"], queue="jobs.normal")
    ids = [producer.submit(f"intake-{tag}-{i}") for i in range(20)]
    worker = start_worker(redis_url, sim, concurrency=5, name="intake")
    try:
        jobs = producer.wait(ids, timeout=60)
        wait_until(lambda: "names no job" in worker.output(), timeout=10)
        assert "taking jobs from jobs.high, jobs.normal, jobs.low" in worker.output()
    finally:
        worker.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 20
    assert producer.redis.llen(keys.SET_ASIDE) == 1
    assert messages_left(producer.redis) == 0
    registry = CollectorRegistry()
    registry.register(ClusterCollector(producer.redis))
    assert registry.get_sample_value("courier_messages_set_aside") == 1


def test_an_idle_worker_starts_a_new_job_at_once(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    """With its queues empty the intake waits on BRPOP, not on a poll interval."""
    sim.configure(latency=0)
    worker = start_worker(redis_url, sim, concurrency=5, name="idle-intake")
    try:
        producer.wait([producer.submit("warm-up")], timeout=30)
        time.sleep(1.5)  # the intake is now blocked in BRPOP on empty queues
        waits = []
        for i in range(5):
            job_id = producer.submit(f"idle-{i}")
            producer.wait([job_id], timeout=10)
            record = producer.store.get(job_id) or {}
            waits.append(float(record["started_at"]) - float(record["created_at"]))
    finally:
        worker.stop()
    # Generous for a loaded CI host; a poll loop would show its period here.
    assert sorted(waits)[len(waits) // 2] < 0.5, waits


def test_a_worker_imports_the_provider_sdks_before_it_takes_a_job(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    """The default (tests turn it off to start workers faster): a gevent worker that imported
    ``anthropic`` on its first call stalled every greenlet for ~1.2 s."""
    worker = start_worker(
        redis_url, sim, concurrency=5, name="preload", env={"COURIER_WORKER_PRELOAD_SDKS": "true"}
    )
    try:
        ids = [
            producer.submit("first anthropic", "anthropic:claude-haiku-4-5"),
            producer.submit("first openai", "openai:gpt-4o-mini"),
        ]
        assert {j["status"] for j in producer.wait(ids, timeout=30)} == {"succeeded"}
    finally:
        worker.stop()
    output = worker.output()
    imported = output.find("provider SDKs imported (openai, anthropic)")
    assert 0 <= imported < output.find("intake: taking jobs")


def test_a_warm_shutdown_takes_no_more_jobs(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    """SIGTERM stops the intake: the jobs running finish within the grace, the rest stay
    queued, with their messages, for the next worker."""
    sim.configure(latency=1)
    ids = [producer.submit(f"shutdown-{i}") for i in range(30)]
    env = {"COURIER_SHUTDOWN_GRACE_S": "10"}
    worker = start_worker(redis_url, sim, concurrency=5, env=env, name="stopping")
    wait_until(lambda: sum(producer.job(j)["status"] != "queued" for j in ids) >= 5, timeout=20)
    signalled = time.time()
    sigterm_and_wait(worker)
    records = [producer.store.get(j) or {} for j in ids]
    late = [r["id"] for r in records if r.get("started_at") and float(r["started_at"]) > signalled]
    assert late == []
    queued = [r["id"] for r in records if r["status"] == "queued"]
    assert all(r["status"] in ("succeeded", "queued") for r in records)
    assert len(queued) >= 15
    assert messages_left(producer.redis) == len(queued)
