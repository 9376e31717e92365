"""A worker's budget leases against real Redis: several calls from one reservation, slices
given back by each call's settle, unused leases returned, leases shrinking near the end."""

from __future__ import annotations

import time
import uuid

import redis

from config.costs import TenantBudget
from core.cost.ledger import Charge, Ledger
from workers.run.leases import BudgetLeases

WORST = 1_000  # nano-dollars


def budgeted(client: redis.Redis, usd: float) -> tuple[Ledger, str]:
    ledger, tenant = Ledger(client), f"lease-{uuid.uuid4().hex[:8]}"
    ledger.set_budget(tenant, TenantBudget(usd=usd, period="total"))
    return ledger, tenant


def test_calls_come_out_of_one_lease_and_give_their_slices_back(
    redis_client: redis.Redis,
) -> None:
    ledger, tenant = budgeted(redis_client, usd=1.0)  # room for a million worst cases
    leases = BudgetLeases(ledger, calls_per_lease=8, idle_s=60)
    holds = [leases.take(tenant, "openai:m", WORST, hold_s=60) for _ in range(8)]
    assert {h.verdict for h in holds} == {"granted"}
    assert len({h.id for h in holds}) == 1  # one reservation, one round trip
    assert ledger.spent_nano(tenant, "total") == (0, 8 * WORST)
    ninth = leases.take(tenant, "openai:m", WORST, hold_s=60)
    assert ninth.id != holds[0].id  # the first lease is spent: a new one
    for hold in holds:
        ledger.settle(Charge(tenant, "", "openai:m", 300, 1, 1, hold.id, hold_nano=WORST))
    spent, held = ledger.spent_nano(tenant, "total")
    assert spent == 8 * 300 and held == 8 * WORST  # only the second lease is held
    leases.idle_s = 0
    assert leases.give_back_idle() == 1  # its seven calls not handed out go back
    assert ledger.spent_nano(tenant, "total")[1] == WORST
    ledger.settle(Charge(tenant, "", "openai:m", 300, 1, 1, ninth.id, hold_nano=WORST))
    assert ledger.spent_nano(tenant, "total") == (9 * 300, 0)


def test_near_the_end_a_lease_is_one_call_and_the_rest_wait_or_stop(
    redis_client: redis.Redis,
) -> None:
    ledger, tenant = budgeted(redis_client, usd=4 * WORST / 1e9)
    a, b = BudgetLeases(ledger), BudgetLeases(ledger)  # two worker processes
    first = a.take(tenant, "openai:m", WORST, hold_s=60)
    assert first.verdict == "granted" and first.granted_nano == WORST  # a quarter of 4
    others = [b.take(tenant, "openai:m", WORST, hold_s=60) for _ in range(3)]
    assert [h.verdict for h in others] == ["granted"] * 3
    assert b.take(tenant, "openai:m", WORST, hold_s=60).verdict == "wait"
    ledger.settle(Charge(tenant, "", "openai:m", WORST, 1, 1, first.id, hold_nano=WORST))
    for hold in others:
        ledger.settle(Charge(tenant, "", "openai:m", WORST, 1, 1, hold.id, hold_nano=WORST))
    assert a.take(tenant, "openai:m", WORST, hold_s=60).verdict == "exceeded"
    assert ledger.spent_nano(tenant, "total") == (4 * WORST, 0)


def test_a_lease_hands_out_only_calls_that_end_before_it_lapses(
    redis_client: redis.Redis,
) -> None:
    ledger, tenant = budgeted(redis_client, usd=1.0)
    leases = BudgetLeases(ledger, fresh_s=0.05, idle_s=60)
    first = leases.take(tenant, "openai:m", WORST, hold_s=10)
    longer = leases.take(tenant, "openai:m", WORST, hold_s=3600)  # would outlive the lease
    assert longer.id != first.id
    time.sleep(0.06)
    stale = leases.take(tenant, "openai:m", WORST, hold_s=10)  # the lease is no longer fresh
    assert stale.id != longer.id
