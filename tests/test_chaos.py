"""Crash safety with real processes: kill -9 a worker mid-run, restart Redis mid-run.

Figures (recovery time, duplicate provider calls) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.support.jobs import DirectProducer
from tests.support.procs import wait_until
from tests.support.redis_server import RedisServer
from tests.support.simulator import SimulatorHandle
from tests.support.workers import start_worker

FAST_RECOVERY = {"COURIER_LEASE_TTL_S": "5", "COURIER_SWEEP_INTERVAL_S": "0.5"}


def calls_by_prompt(sim: SimulatorHandle, tag: str) -> dict[str, list[dict[str, float]]]:
    calls: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in sim.log():
        prompt = str(r.get("prompt", ""))
        if tag in prompt:  # every call the provider saw, even one whose caller died
            finished = r.get("finished") or time.time()
            calls[prompt].append(
                {"started": float(str(r["started"])), "finished": float(str(finished))}
            )
    return calls


def assert_never_concurrent(calls: dict[str, list[dict[str, float]]]) -> int:
    """No job ran on two workers at once; returns how many jobs were called twice or more."""
    duplicates = 0
    for prompt, runs in calls.items():
        runs.sort(key=lambda r: r["started"])
        for earlier, later in itertools.pairwise(runs):
            assert later["started"] >= earlier["finished"] - 0.05, f"{prompt} ran twice at once"
        duplicates += len(runs) > 1
    return duplicates


@pytest.fixture()
def producer(redis_url: str) -> Iterator[DirectProducer]:
    p = DirectProducer(redis_url)
    yield p
    p.close()


def test_kill9_worker_mid_run(
    redis_url: str, sim: SimulatorHandle, producer: DirectProducer
) -> None:
    sim.configure(latency=1)
    tag = f"chaos-{uuid.uuid4().hex[:6]}"
    first = start_worker(redis_url, sim, concurrency=50, env=FAST_RECOVERY, name="doomed")
    ids = [producer.submit(f"{tag}-{i}") for i in range(200)]
    # Mid-run: some done, ~50 calls in flight, the rest queued.
    wait_until(lambda: len(calls_by_prompt(sim, tag)) >= 80, timeout=30)
    first.kill9()
    killed_at = time.monotonic()
    second = start_worker(redis_url, sim, concurrency=100, env=FAST_RECOVERY, name="rescuer")
    try:
        jobs = producer.wait(ids, timeout=90)
        recovery = time.monotonic() - killed_at
    finally:
        second.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 200
    calls = calls_by_prompt(sim, tag)
    duplicates = assert_never_concurrent(calls)
    print(f"\nprovider calls: {sum(len(v) for v in calls.values())} for {len(calls)} jobs")
    print(
        f"\nkill -9: all 200 succeeded {recovery:.1f}s after the kill; {duplicates} duplicate calls"
    )
    assert recovery < 60


def test_redis_restart_loses_no_job(sim: SimulatorHandle) -> None:
    sim.configure(latency=1)
    server = RedisServer()
    server.start()
    producer = DirectProducer(server.url)
    worker = start_worker(server.url, sim, concurrency=50, env=FAST_RECOVERY, name="restart")
    tag = f"restart-{uuid.uuid4().hex[:6]}"
    try:
        ids = [producer.submit(f"{tag}-{i}") for i in range(100)]
        time.sleep(1.5)
        server.restart(down_for=2)
        jobs = producer.wait(ids, timeout=120)
    finally:
        worker.stop()
        producer.close()
        server.stop()
    assert [j["status"] for j in jobs] == ["succeeded"] * 100
    duplicates = assert_never_concurrent(calls_by_prompt(sim, tag))
    print(f"\nRedis restart: all 100 succeeded; {duplicates} duplicate calls")
