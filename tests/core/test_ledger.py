"""The cost ledger against real Redis: reservations that concurrency cannot overshoot,
settles, lapsed reservations, usage per period and model, budgets set at run time."""

from __future__ import annotations

import random
import threading
import time
import uuid

import redis

from config.costs import TenantBudget
from core import keys
from core.cost.ledger import BudgetDirectory, Charge, Ledger, period_ids
from core.records import to_view
from core.store import JobStore


def tenant() -> str:
    return f"ledger-{uuid.uuid4().hex[:8]}"


def test_no_budget_means_no_reservation(redis_client: redis.Redis) -> None:
    hold = Ledger(redis_client).reserve(tenant(), "openai:m", 1000, hold_s=60)
    assert hold.verdict == "none" and hold.id == ""


def test_concurrent_reservations_never_overshoot(redis_client: redis.Redis) -> None:
    """Twenty threads on their own connections, each reserving a worst case and settling a
    true cost at most that, until the budget refuses: what was spent never exceeds the
    budget, and what is left could not take one more worst case."""
    name, worst = tenant(), 1_000_000  # $0.001
    ledger = Ledger(redis_client)
    ledger.set_budget(name, TenantBudget(usd=0.05, period="day"))  # 50 worst cases
    granted, lock = [0], threading.Lock()

    def worker(seed: int) -> None:
        client = redis.Redis(connection_pool=redis_client.connection_pool)
        mine, rng = Ledger(client), random.Random(seed)
        while True:
            hold = mine.reserve(name, "openai:m", worst, hold_s=60)
            if hold.verdict == "exceeded":
                return
            if hold.verdict == "wait":
                time.sleep(0.001)
                continue
            with lock:
                granted[0] += 1
            cost = rng.randint(worst // 10, worst)
            mine.settle(Charge(name, "", "openai:m", cost, 10, 10, hold.id))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    spent, held = ledger.spent_nano(name, "day")
    assert held == 0
    assert spent <= 50_000_000
    assert 50_000_000 - spent < worst  # refused only what could not fit
    assert granted[0] >= 50  # true costs below the worst case let more calls through


def test_settle_records_usage_by_model_and_the_jobs_cost(redis_client: redis.Redis) -> None:
    store, ledger, name = JobStore(redis_client, 3600), Ledger(redis_client), tenant()
    job_id, _ = store.create(name, {"model": "openai:a", "priority": "normal", "cost_nano": 0})
    ledger.settle(Charge(name, job_id, "openai:a", 1500, 100, 20))
    ledger.settle(Charge(name, job_id, "openai:a", 500, 50, 0))  # a second call: one job
    ledger.settle(Charge(name, job_id, "openai:b", 1000, 10, 10))
    raw = ledger.spend(name, "month")
    assert int(raw["usd"]) == 3000
    assert (raw["openai:a|in"], raw["openai:a|out"], raw["openai:a|jobs"]) == ("150", "20", "1")
    assert raw["openai:b|jobs"] == "1"
    assert ledger.spend(name, "day")["usd"] == ledger.spend(name, "total")["usd"] == "3000"
    assert to_view(store.get(job_id) or {})["cost_usd"] == 3e-06
    # a call to a model without a price: counted in tokens, and the job's cost is unknown
    ledger.settle(Charge(name, job_id, "local:x", None, 7, 3))
    assert to_view(store.get(job_id) or {})["cost_usd"] is None
    assert "local:x|usd" not in ledger.spend(name, "day")
    assert int(redis_client.hget(keys.metrics("cost"), f"{name}|openai:a") or 0) == 2000


def test_a_reservation_never_settled_lapses_and_is_charged_in_full(
    redis_client: redis.Redis,
) -> None:
    ledger, name = Ledger(redis_client), tenant()
    ledger.set_budget(name, TenantBudget(usd=1, period="total"))
    now = time.time()
    lost = ledger.reserve(name, "openai:m", 400_000_000, hold_s=5, now=now)
    assert lost.verdict == "granted"
    # while it is held, a second worst case of the same size must wait
    assert ledger.reserve(name, "openai:m", 700_000_000, hold_s=5, now=now).verdict == "wait"
    later = ledger.reserve(name, "openai:m", 500_000_000, hold_s=5, now=now + 10)
    assert later.verdict == "granted"  # the lost one lapsed: charged 0.4, held 0.5
    spent, held = ledger.spent_nano(name, "total", now + 10)
    assert (spent, held) == (400_000_000, 500_000_000)
    # a late settle of the lapsed reservation gives nothing back twice
    assert ledger.settle(Charge(name, "", "openai:m", 0, hold_id=lost.id, made=False)) == 0
    assert ledger.reserve(name, "openai:m", 700_000_000, hold_s=5, now=now + 10).verdict == (
        "exceeded"
    )


def test_periods_and_a_budget_changed_at_run_time(redis_client: redis.Redis) -> None:
    ledger, name = Ledger(redis_client), tenant()
    ledger.set_budget(name, TenantBudget(usd=0.001, period="day"))
    ledger.settle(Charge(name, "", "openai:m", 900_000, 1, 1))
    assert ledger.reserve(name, "openai:m", 200_000, hold_s=5).verdict == "exceeded"
    # the same spend, measured against a month's larger budget: the next call fits
    ledger.set_budget(name, TenantBudget(usd=0.01, period="month"))
    assert ledger.reserve(name, "openai:m", 200_000, hold_s=5).verdict == "granted"
    tomorrow = time.time() + 86400
    assert period_ids(tomorrow)["day"] != period_ids(time.time())["day"]
    assert ledger.spent_nano(name, "day", tomorrow)[0] == 0


def test_seed_keeps_what_was_set_at_run_time(redis_client: redis.Redis) -> None:
    ledger, a, b = Ledger(redis_client), tenant(), tenant()
    ledger.seed({a: TenantBudget(usd=5, period="day"), b: TenantBudget(usd=5, period="day")})
    ledger.set_budget(b, TenantBudget(usd=9, period="month"))  # the CLI's
    ledger.seed({a: TenantBudget(usd=6, period="day"), b: TenantBudget(usd=5, period="day")})
    budgets = ledger.budgets()
    assert (budgets[a].usd, budgets[a].source) == (6, "env")
    assert (budgets[b].usd, budgets[b].period, budgets[b].source) == (9, "month", "cli")
    directory = BudgetDirectory(ledger, ttl_s=60)
    assert directory.get(a) is not None
    ledger.remove_budget(a)
    assert directory.get(a) is not None  # as last read, until the directory reads again
    directory.forget()
    assert directory.get(a) is None
