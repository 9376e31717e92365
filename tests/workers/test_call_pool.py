"""The call pool of a gevent worker (workers.run.pool), with real workers and the simulator:
it bounds the calls in flight and leaves the rest of the queue in Redis, and a warm
shutdown waits for its calls."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from core import keys
from core.fair import held
from tests.support.jobs import DirectProducer
from tests.support.procs import wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import flush_queues, sigterm_and_wait, start_worker


@pytest.fixture()
def producer(redis_url: str) -> Iterator[DirectProducer]:
    flush_queues(redis_url)
    p = DirectProducer(redis_url)
    yield p
    p.close()


def _tagged(sim: SimulatorHandle, tag: str) -> list[dict[str, float]]:
    return [
        {"started": float(r["started"]), "finished": float(r.get("finished") or time.time())}
        for r in sim.log()
        if tag in str(r.get("prompt", ""))
    ]


def _most_at_once(calls: list[dict[str, float]]) -> int:
    edges = sorted([(c["started"], 1) for c in calls] + [(c["finished"], -1) for c in calls])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_a_full_pool_takes_no_message(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=1.5)
    tag = f"pool-{uuid.uuid4().hex[:6]}"
    worker = start_worker(redis_url, sim, concurrency=2, name="pool")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ids = [producer.submit(f"{tag}-{i}") for i in range(6)]
        wait_until(lambda: len(_tagged(sim, tag)) >= 2, timeout=20)
        time.sleep(0.5)
        # Two calls run; the other four are still messages in Redis, not taken and waiting.
        assert client.zcard(keys.RUNNING) == 2
        # (on the broker's lists, or sorted by the intake into its tenant lists)
        on_lists = sum(client.llen(k) for k in client.scan_iter("jobs.normal*"))
        assert on_lists + held(client, ["normal"])["normal"] == 4
        jobs = producer.wait(ids, timeout=60)
    finally:
        worker.stop()
        client.close()
    assert [j["status"] for j in jobs] == ["succeeded"] * 6
    calls = _tagged(sim, tag)
    assert len(calls) == 6 and _most_at_once(calls) == 2


def test_warm_shutdown_waits_for_calls_within_the_grace(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=2)
    tag = f"drain-{uuid.uuid4().hex[:6]}"
    env = {"COURIER_SHUTDOWN_GRACE_S": "20"}
    worker = start_worker(redis_url, sim, concurrency=10, env=env, name="drain")
    ids = [producer.submit(f"{tag}-{i}") for i in range(3)]
    wait_until(lambda: len(_tagged(sim, tag)) >= 3, timeout=20)
    took = sigterm_and_wait(worker)
    # The calls ended and were recorded before the process left; nothing was handed back.
    assert [producer.job(j)["status"] for j in ids] == ["succeeded"] * 3
    assert took < 15, f"shutdown took {took:.1f}s"
    assert len(_tagged(sim, tag)) == 3
    assert "handed" not in worker.output()
