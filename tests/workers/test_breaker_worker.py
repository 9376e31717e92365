"""The rate breaker in a real worker against the simulator: random faults leave it closed,
an outage opens it, and it closes again once the provider is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from core import keys
from core.metrics import BREAKER_TRANSITIONS, field
from tests.support.jobs import DirectProducer
from tests.support.procs import Proc
from tests.support.simulator import SimulatorHandle
from tests.support.workers import flush_queues, start_worker


@pytest.fixture(scope="module")
def worker(redis_url: str, simulator: SimulatorHandle) -> Iterator[Proc]:
    proc = start_worker(
        redis_url, simulator, concurrency=100, env={"COURIER_BREAKER_COOLDOWN_S": "2"}
    )
    yield proc
    proc.stop()


@pytest.fixture()
def producer(redis_url: str, worker: Proc) -> Iterator[DirectProducer]:
    flush_queues(redis_url)
    p = DirectProducer(redis_url)
    yield p
    p.close()


def transitions(client: redis.Redis, model: str) -> dict[str, int]:
    raw = client.hgetall(keys.metrics(BREAKER_TRANSITIONS))
    return {
        state: int(raw.get(field(model, state), 0))  # type: ignore[union-attr]
        for state in ("open", "half_open", "closed")
    }


def test_random_faults_do_not_open_the_circuit(
    sim: SimulatorHandle, producer: DirectProducer, redis_client: redis.Redis
) -> None:
    model = f"openai:mixed-{uuid.uuid4().hex[:8]}"
    sim.configure(fault_mix={"429": 0.15, "500": 0.10, "503": 0.05}, seed=3)
    ids = [producer.submit(f"mixed {i}", model, max_attempts=8) for i in range(150)]
    jobs = producer.wait(ids, timeout=90)
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs][:3]
    statuses = [e["status"] for e in sim.log() if e["model"] == model.split(":")[1]]
    assert {429, 500, 503} <= set(statuses)  # the faults did happen
    assert transitions(redis_client, model) == {"open": 0, "half_open": 0, "closed": 0}


def test_an_outage_opens_the_circuit_and_recovery_closes_it(
    sim: SimulatorHandle, producer: DirectProducer, redis_client: redis.Redis
) -> None:
    model = f"openai:outage-{uuid.uuid4().hex[:8]}"
    name = model.split(":")[1]
    sim.outage(4.0, match=name)
    ids = []
    for i in range(60):  # a steady stream across the outage and past it
        ids.append(producer.submit(f"outage {i}", model, max_attempts=8))
        time.sleep(0.1)
    jobs = producer.wait(ids, timeout=60)
    assert all(j["status"] == "succeeded" for j in jobs), [j["error"] for j in jobs][:3]
    log = [e for e in sim.log() if e["model"] == name]
    refused = [e for e in log if e["status"] == 503]
    seen = transitions(redis_client, model)
    # 20 calls started in the 5 s window, all failed, open it; then a few probes a cool-down;
    # without a breaker these jobs made well over 100 calls to the dead provider.
    print(f"calls refused by the outage: {len(refused)} of {len(log)}; transitions {seen}")
    assert 20 <= len(refused) <= 60, len(refused)
    assert seen["open"] >= 1 and seen["half_open"] >= 1 and seen["closed"] == 1, seen
    assert redis_client.hget(keys.breaker(model), "state") is None  # closed
    assert "1" not in str(redis_client.hget(keys.breaker(model), "ring"))  # a fresh window
