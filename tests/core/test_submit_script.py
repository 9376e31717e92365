"""The SUBMIT script (core/submit_script.py) on a real Redis: each check refuses before any
write, a created job and its message are written together, a replay returns the first job."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery

from core import keys
from core.coalesce import Coalescer
from core.store import JobStore
from core.submit_script import Limits, Outcome, Submitter
from core.task_message import RunJobMessages
from tests.support.jobs import job_fields


def submit(redis_url: str, app: Celery | None, tenant: str, **options: Any) -> Outcome:
    async def run() -> Outcome:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        store = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), 3600)
        messages = RunJobMessages(app, 0) if app is not None else None
        try:
            return await Submitter(Coalescer(client), store, messages).submit(
                tenant,
                job_fields("hi"),
                options.get("counter", "m|normal|chat"),
                options.get("key"),
                options.get("max_unfinished"),
                options.get("limits", Limits()),
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def snapshot(client: redis.Redis, tenant: str) -> set[str]:
    return {k for k in client.keys("*") if tenant in k or "jobs." in k}


NORMAL = f"jobs.normal{keys.PRIORITY_SEP}3"  # the list of normal jobs' messages


def test_created_with_its_message(redis_url: str, redis_client: redis.Redis, app: Celery) -> None:
    redis_client.delete(NORMAL)  # earlier tests of the session may have left messages
    outcome = submit(redis_url, app, "s1")
    assert outcome.kind == "created"
    job_id = outcome.record["id"]
    assert redis_client.hget(keys.job(job_id), "status") == "queued"
    [message] = redis_client.lrange(NORMAL, 0, -1)
    assert f"['{job_id}']" in message
    assert redis_client.zscore(keys.queued("normal"), job_id) is not None
    assert redis_client.hget(keys.metrics("submitted"), "m|normal|chat") == "1"
    redis_client.delete(NORMAL)


def test_without_messages_only_stored(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.delete(NORMAL)
    outcome = submit(redis_url, None, "s2", counter="")
    assert outcome.kind == "created"
    assert not redis_client.exists(NORMAL)
    assert redis_client.hget(keys.job(outcome.record["id"]), "status") == "queued"


def test_replay_returns_the_first_job(redis_url: str, app: Celery) -> None:
    first = submit(redis_url, app, "s3", key="k1")
    again = submit(redis_url, app, "s3", key="k1")
    assert (first.kind, again.kind) == ("created", "replay")
    assert again.record["id"] == first.record["id"]
    assert again.record["status"] == "queued"


def test_refusals_store_nothing(redis_url: str, redis_client: redis.Redis, app: Celery) -> None:
    rate = Limits(rate=0.01, burst=1)
    assert submit(redis_url, app, "s4", key="a", limits=rate).kind == "created"
    before = snapshot(redis_client, "s4")
    over_rate = submit(redis_url, app, "s4", key="b", limits=rate)
    assert over_rate.kind == "rate_limited" and over_rate.value > 0
    spend = keys.spend("s4", "total")
    redis_client.hset(spend, "usd", 900)
    budget = Limits(spend_key=spend, budget_nano=1000, worst_nano=101)
    over_budget = submit(redis_url, app, "s4", key="c", limits=budget)
    assert (over_budget.kind, over_budget.value) == ("budget_exceeded", 900)
    over_cap = submit(redis_url, app, "s4", key="d", max_unfinished=1)
    assert (over_cap.kind, over_cap.value) == ("quota_exceeded", 1)
    assert snapshot(redis_client, "s4") - {spend} == before
    # a replay is never refused by the budget or the cap
    assert submit(redis_url, app, "s4", key="a", limits=budget, max_unfinished=1).kind == "replay"
    for name in redis_client.keys("jobs.*"):
        redis_client.delete(name)
