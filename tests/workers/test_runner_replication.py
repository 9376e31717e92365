"""The runner's ending where replicas are configured (README, High availability): held until
a replica confirms it, written again on a new master that lost it, dropped when the job has
meanwhile ended otherwise. The replication check is scripted here (what a failover does to
the record is played on the test Redis); tests/core/test_sentinel.py and
tests/system/test_failover.py run the real one."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from core import keys
from core.replication import Replicated, Replication
from tests.support.jobs import job_fields
from tests.support.seams import FakeProviders, FakeSleep, make_runtime
from workers.run.breaker import NoBreaker
from workers.run.runner import JobRunner
from workers.runtime import Runtime

# One answer of the check: a state, an error to raise, or something that happens first.
Answer = Replicated | Exception | Callable[[], Replicated]


class ScriptedReplication(Replication):
    """Answers ``answers`` in turn (then CONFIRMED); records the statuses it was asked for."""

    def __init__(self, client: redis.Redis, answers: list[Answer]) -> None:
        super().__init__(client, replicas=1)
        self.answers = answers
        self.asked: list[str] = []

    def confirm(self, job_ids: object, status: str = "") -> Replicated:
        self.asked.append(status)
        answer = self.answers.pop(0) if self.answers else Replicated.CONFIRMED
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Replicated) else answer()


@pytest.fixture()
def runtime(redis_client: redis.Redis) -> Runtime:
    return make_runtime(redis_client, lease_ttl_s=20)


def submit(runtime: Runtime) -> str:
    job_id, _ = runtime.store.create("t1", job_fields("Hi", f"openai:m-{uuid.uuid4().hex[:8]}"))
    return job_id


def run(
    runtime: Runtime, job_id: str, answers: list[Answer]
) -> tuple[str, ScriptedReplication, FakeSleep]:
    """Run the job with the check answering ``answers``: (outcome status, the check, the
    sleeps)."""
    replication = ScriptedReplication(runtime.redis, answers)
    runtime.store.replication = replication
    sleep = FakeSleep()
    job_runner = JobRunner(
        runtime=runtime,
        get_provider=FakeProviders(),
        breaker=NoBreaker(),
        sleep=sleep,
    )
    return job_runner.run(job_id).status, replication, sleep


def test_an_ending_waits_for_a_replica_through_a_failover(runtime: Runtime) -> None:
    answers: list[Answer] = [
        Replicated.LAGGING,
        redis.ConnectionError("the master died"),
        redis.ReadOnlyError("demoted"),
        Replicated.CONFIRMED,
    ]
    job_id = submit(runtime)
    status, replication, sleep = run(runtime, job_id, answers)
    assert status == "succeeded"
    assert replication.asked == ["succeeded"] * 4
    assert len(sleep.delays) == 3
    assert runtime.store.get(job_id)["status"] == "succeeded"  # type: ignore[index]
    assert runtime.leases.snapshot() == {}


def test_an_ending_the_failover_lost_is_written_again(runtime: Runtime) -> None:
    """The new master holds the job as running under this worker's lease (the ending never
    reached it): the worker ends it there again."""

    job_id = submit(runtime)

    def ending_lost() -> Replicated:
        token = runtime.leases.snapshot()[job_id]  # still held while the ending is unconfirmed
        runtime.redis.hset(
            keys.job(job_id), mapping={"status": "running", "lease": token, "ended_by": ""}
        )
        runtime.redis.hdel(keys.job(job_id), "result")
        return Replicated.MISSING

    status, replication, _ = run(runtime, job_id, [ending_lost])
    assert status == "succeeded"
    assert replication.asked == ["succeeded", "succeeded"]
    record = runtime.store.get(job_id)
    assert record is not None and record["status"] == "succeeded" and record["result"]


def test_an_ending_lost_while_the_job_ended_otherwise_is_dropped(runtime: Runtime) -> None:
    job_id = submit(runtime)

    def cancelled_on_the_new_master() -> Replicated:
        runtime.redis.hset(keys.job(job_id), mapping={"status": "cancelled", "ended_by": ""})
        return Replicated.MISSING

    status, _, _ = run(runtime, job_id, [cancelled_on_the_new_master])
    assert status == "skipped"
    assert runtime.store.get(job_id)["status"] == "cancelled"  # type: ignore[index]


def test_an_ending_refused_by_a_demoted_master_is_written_once_one_answers(
    runtime: Runtime,
) -> None:
    """Without Sentinel (a plain URL to a server that became a replica) a write is refused
    with READONLY; through Sentinel the client turns that into a ConnectionError. Both are
    retried, with the lease kept, until a master answers."""
    job_id = submit(runtime)
    finish = runtime.store.finish
    refusals: list[Exception] = [
        redis.ReadOnlyError("You can't write against a read only replica."),
        redis.ConnectionError("The previous master is now a slave"),
        redis.exceptions.NoScriptError("NOSCRIPT No matching script."),
    ]

    def refused_then_written(*args: Any, **kwargs: Any) -> tuple[bool, str, bool]:
        if refusals:
            assert runtime.leases.snapshot(), "the lease is kept while the ending waits"
            raise refusals.pop(0)
        return finish(*args, **kwargs)

    runtime.store.finish = refused_then_written  # type: ignore[method-assign]
    status, _, sleep = run(runtime, job_id, [])
    assert status == "succeeded" and len(sleep.delays) == 3
    assert runtime.store.get(job_id)["status"] == "succeeded"  # type: ignore[index]
