"""The job store against real Redis: atomic, one-way transitions, leases, schedules."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from core import keys
from core.records import to_view
from core.store import JobStore
from producers.api.queue_position import queue_position, start_rate

FIELDS: dict[str, Any] = {
    "model": "openai:gpt-4o-mini",
    "kind": "chat",
    "priority": "normal",
    "request": {"messages": [{"role": "user", "content": "Hi"}]},
    "fallback_models": [],
    "metadata": {"order": 42},
    "max_attempts": 5,
    "timeout_s": 120,
}


def make_store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, retention_s=3600)


def test_create_get_and_view(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, created = store.create("t1", FIELDS)
    assert created and job_id.startswith("job_")
    view = to_view(store.get(job_id) or {})
    assert view["status"] == "queued"
    assert view["metadata"] == {"order": 42}
    assert view["callback"]["status"] == "none"
    assert view["result"] is None and view["error"] is None
    assert 0 < redis_client.ttl(keys.job(job_id)) <= 3600


def test_ids_sort_by_time_and_list_newest_first(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    ids = []
    for _ in range(3):
        ids.append(store.create("lister", FIELDS)[0])
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert [r["id"] for r in store.list_jobs("lister", None, 10)] == ids[::-1]


def test_idempotency_is_per_tenant(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    first, created = store.create("a", FIELDS, "key-1")
    again, created_again = store.create("a", FIELDS, "key-1")
    other, created_other = store.create("b", FIELDS, "key-1")
    assert created and not created_again and again == first
    assert created_other and other != first


def test_claim_is_exclusive_and_finish_is_one_way(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", FIELDS)
    results: list[str] = []

    def claim(token: str) -> None:
        results.append(store.claim(job_id, token, 10).status)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("claimed") == 1
    holder = store.get(job_id)["lease"]  # type: ignore[index]
    assert store.finish(job_id, "succeeded", token="someone-else")[0] is False
    assert store.finish(job_id, "succeeded", token=holder, fields={"result": {"x": 1}})[0]
    # A finished job never goes back, and never ends twice.
    assert store.finish(job_id, "failed", token=holder)[0] is False
    assert store.claim(job_id, "late", 10).status == "succeeded"
    assert store.get(job_id)["status"] == "succeeded"  # type: ignore[index]


def test_cancel_wins_over_a_running_worker(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", FIELDS)
    assert store.claim(job_id, "tok", 10).status == "claimed"
    ended, previous, _ = store.finish(job_id, "cancelled", allowed=("queued", "running"))
    assert ended and previous == "running"
    assert store.begin_attempt(job_id, "tok") == -1
    assert store.finish(job_id, "succeeded", token="tok")[0] is False


def test_lapsed_lease_is_recovered_and_scheduled(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", FIELDS)
    assert store.claim(job_id, "dead-worker", 0.05).status == "claimed"
    time.sleep(0.1)
    assert job_id in store.recover_lapsed()
    assert store.get(job_id)["status"] == "queued"  # type: ignore[index]
    assert (job_id, "normal") in store.due()
    # The dead worker's late answer is refused.
    assert store.finish(job_id, "succeeded", token="dead-worker")[0] is False
    assert store.claim(job_id, "new-worker", 10).status == "claimed"


def test_renew_keeps_lease_and_reports_lost(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", FIELDS)
    store.claim(job_id, "tok", 0.2)
    assert store.renew({job_id: "tok"}, 10) == []
    time.sleep(0.3)
    assert job_id not in store.recover_lapsed()
    assert store.renew({job_id: "wrong"}, 10) == [job_id]


def test_requeue_waits_until_due(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", FIELDS)
    store.claim(job_id, "tok", 10)
    assert store.requeue(job_id, "tok", 0.3, "retry")
    assert store.claim(job_id, "early", 10).status == "scheduled"
    assert all(j != job_id for j, _ in store.due())
    time.sleep(0.35)
    assert (job_id, "normal") in store.due()
    assert store.claim(job_id, "on-time", 10).status == "claimed"


def test_expiry(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    job_id, _ = store.create("t1", {**FIELDS, "expires_at": time.time() - 1})
    assert store.claim(job_id, "tok", 10).status == "expired"
    assert job_id in store.expired_queued()
    ended, _, _ = store.finish(job_id, "expired", allowed=("queued",))
    assert ended and store.get(job_id)["status"] == "expired"  # type: ignore[index]


def test_queue_position_and_aging(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    for key in keys.QUEUED_ALL:
        redis_client.delete(key)
    high = [store.create("t1", {**FIELDS, "priority": "high"})[0] for _ in range(2)]
    low = [store.create("t1", {**FIELDS, "priority": "low"})[0] for _ in range(3)]
    assert queue_position(redis_client, high[1], "high") == (2, 1)
    assert queue_position(redis_client, low[0], "low") == (1, 2)
    assert store.claim(high[0], "tok", 10).status == "claimed"
    assert queue_position(redis_client, high[0], "high") is None
    assert queue_position(redis_client, low[2], "low") == (3, 3)
    time.sleep(0.05)
    moved = store.age("low", "normal", older_than_s=0.01)
    assert moved == low
    assert queue_position(redis_client, low[0], "normal") == (1, 1)
    assert start_rate(redis_client, window_s=5) >= 0


def test_orphans_are_queued_jobs_whose_queue_is_empty(redis_client: redis.Redis) -> None:
    store = make_store(redis_client)
    for key in (*keys.QUEUED_ALL, *keys.broker_lists(["jobs.low"])):  # earlier tests' too
        redis_client.delete(key)
    job_id, _ = store.create("t1", {**FIELDS, "priority": "low"})
    time.sleep(0.05)
    redis_client.rpush("jobs.low", "a message")
    assert store.orphans("low", older_than_s=0.01) == []  # its message may be that one
    redis_client.delete("jobs.low")
    assert store.orphans("low", older_than_s=0.01) == [job_id]
    assert store.orphans("low", older_than_s=10) == []  # reported once per period
