"""A budget under concurrency: two gevent worker processes take a burst of jobs of one
tenant at once, every call reserved at its worst case; true spend never passes the budget,
the jobs refused are those that could not fit, and nothing stays reserved."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from config.costs import TenantBudget
from core.cost.bound import bound, capped
from core.cost.ledger import Ledger
from core.cost.prices import PriceTable
from tests.support.jobs import DirectProducer, chat
from tests.support.procs import Proc, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import flush_queues, start_worker

pytestmark = pytest.mark.timeout(120)

MODEL = "openai:gpt-4o-mini"
JOBS = 120
FITS = 20  # the budget holds this many worst cases


@pytest.fixture(scope="module")
def workers(redis_url: str, simulator: SimulatorHandle) -> Iterator[list[Proc]]:
    flush_queues(redis_url)
    procs = [start_worker(redis_url, simulator, name=f"budget-{i}", wait=False) for i in range(2)]
    for proc in procs:
        wait_until(lambda p=proc: " ready." in p.output(), timeout=60)  # type: ignore[misc]
    yield procs
    for proc in procs:
        proc.stop(timeout=8)


def test_concurrent_jobs_never_spend_past_the_budget(
    redis_url: str, sim: SimulatorHandle, workers: list[Proc]
) -> None:
    sim.configure(latency=0.2)  # calls overlap: every slot reserves while others are in flight
    tenant = f"burst-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    ledger, producer = Ledger(client), DirectProducer(redis_url)
    request = chat("burst", max_tokens=50)
    price = PriceTable({}).price(MODEL)
    assert price is not None
    limits = bound(capped(request))
    worst = price.worst_nano(limits.input_tokens, limits.output_tokens)
    budget_nano = FITS * worst
    ledger.set_budget(tenant, TenantBudget(usd=budget_nano / 1e9, period="total"))
    time.sleep(1.2)  # the workers learn that the tenant has a budget
    try:
        ids = [
            producer.submit(
                f"burst {i}", MODEL, tenant=tenant, request=chat(f"burst {i:03}", max_tokens=50)
            )
            for i in range(JOBS)
        ]
        jobs = producer.wait(ids, timeout=90)
    finally:
        producer.close()
    spent, held = ledger.spent_nano(tenant, "total")
    client.close()

    succeeded = [j for j in jobs if j["status"] == "succeeded"]
    failed = [j for j in jobs if j["status"] == "failed"]
    assert len(succeeded) + len(failed) == JOBS
    assert {j["error"]["type"] for j in failed} <= {"budget_exceeded"}
    assert held == 0
    assert spent <= budget_nano, (spent, budget_nano)
    # Refused only what could no longer fit: less than one worst case is left, give or take
    # the rounding of one more (a clean-clone run left 1.005 worst cases unused once).
    assert budget_nano - spent < 2 * worst
    assert len(succeeded) >= FITS  # true costs under the worst case let more through
    # jobs stored directly carry no cost until a call settles (the API stores 0 when priced)
    assert sum(j["cost_usd"] or 0 for j in jobs) == pytest.approx(spent / 1e9, abs=1e-9)
    assert all(j["attempts"] == 0 and not j["cost_usd"] for j in failed)
    assert all(j["cost_usd"] > 0 for j in succeeded)
