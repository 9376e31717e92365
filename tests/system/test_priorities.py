"""Strict priorities under a backlog, the reserved high lane, and queue positions."""

from __future__ import annotations

import uuid

import httpx

from producers.api.queue_position import queue_position
from tests.support.jobs import DirectProducer
from tests.support.simulator import SimulatorHandle
from tests.support.stack import KEY1, chat_body
from tests.support.workers import flush_queues, start_worker

pytest_plugins = ["tests.support.fixtures"]


def test_high_jobs_overtake_a_low_backlog(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=0.2)
    tag = uuid.uuid4().hex[:6]
    low = [producer.submit(f"low-{tag}-{i}", priority="low") for i in range(60)]
    high = [producer.submit(f"high-{tag}-{i}", priority="high") for i in range(6)]
    assert queue_position(producer.redis, high[0], "high") == (1, 0)
    assert queue_position(producer.redis, low[59], "low") == (60, 65)
    worker = start_worker(redis_url, sim, concurrency=2, name="prio")
    try:
        jobs = {j["id"]: j for j in producer.wait(low + high, timeout=120)}
    finally:
        worker.stop()
    low_finishes = sorted(jobs[j]["finished_at"] for j in low)
    last_high = max(jobs[j]["finished_at"] for j in high)
    assert last_high < low_finishes[19], "a high job finished after the 20th low one"


def test_reserved_lane_serves_high_while_low_work_hogs_the_pool(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    tag = uuid.uuid4().hex[:6]
    sim.faults([{"delay": 20}] * 4, match=f"slow-{tag}")
    general = start_worker(redis_url, sim, concurrency=4, name="general")
    lane = start_worker(redis_url, sim, concurrency=4, queues="jobs.high", name="lane")
    try:
        slow = [producer.submit(f"slow-{tag}-{i}", priority="low") for i in range(4)]
        high = [producer.submit(f"urgent-{tag}-{i}", priority="high") for i in range(4)]
        done = producer.wait(high, timeout=15)
        assert {j["status"] for j in done} == {"succeeded"}
        # ...while every slow low job still holds (or waits for) the general pool.
        assert not {producer.job(j)["status"] for j in slow} & {"succeeded", "failed"}
    finally:
        lane.stop()
        general.stop()


def test_api_shows_queue_position(redis_url: str, api_url: str) -> None:
    flush_queues(redis_url)
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {KEY1}"}) as client:
        ids = []
        for i in range(3):
            response = client.post("/v1/jobs", json=chat_body(f"queued {i}", priority="high"))
            assert response.status_code == 202
            ids.append(response.json()["id"])
        job = client.get(f"/v1/jobs/{ids[2]}").json()
    assert job["status"] == "queued"
    assert job["queue"]["position"] == 3 and job["queue"]["ahead"] == 2
    flush_queues(redis_url)
