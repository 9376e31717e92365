"""What a submission meets of cost, budgets and the cache (docs/contract.md, Cost, budgets
and cache): the fields it is stored with, the refusals (422 for a model without a price when
the tenant has a budget, 429 ``budget_exceeded`` when the budget cannot take the job), and
the answer from the cache.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings
from core import keys
from core.cache import AnswerCache, cache_digest
from core.cost.bound import bound, capped
from core.cost.ledger import Budget, BudgetDirectory, Ledger, period_bounds, period_ids
from core.cost.prices import PriceTable, usd
from core.jobs import JobSubmission
from core.records import Record
from core.store import JobStore
from producers.api.errors import ApiError, ErrorBody

RESPONSES_429_BUDGET = (
    "or its budget cannot take the job (`budget_exceeded`; `Retry-After` when the budget's "
    "period renews)"
)


@dataclass
class CostServices:
    ledger: Ledger
    prices: PriceTable
    budgets: BudgetDirectory
    cache: AnswerCache

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis) -> CostServices:
        ledger = Ledger(client)
        return cls(
            ledger,
            PriceTable(settings.prices),
            BudgetDirectory(ledger),
            AnswerCache(client, settings.cache_max_entry_bytes, settings.cache_max_tenant_bytes),
        )


def stored_fields(cost: CostServices, tenant: str, submission: JobSubmission) -> dict[str, Any]:
    """The fields cost and cache add to a job record: ``cost_nano`` 0 when its model has a
    price (``cost_usd`` shows 0, not null, before any call), the cache's key and ``ttl_s``."""
    fields: dict[str, Any] = {}
    if cost.prices.price(submission.model) is not None:
        fields["cost_nano"] = 0
    if submission.cache is not None:
        fields["cache_key"] = cache_digest(
            tenant, submission.model, submission.kind, submission.request
        )
        fields["cache_ttl_s"] = submission.cache.ttl_s
    return fields


def check_priced(
    cost: CostServices, tenant: str, submission: JobSubmission, where: str = ""
) -> None:
    """422 when the tenant has a budget and a model of the job (fallbacks too) has no price."""
    if cost.budgets.get(tenant) is None:
        return
    unpriced = cost.prices.unpriced([submission.model, *submission.fallback_models])
    if unpriced:
        raise ApiError(
            422,
            f"{where}model {unpriced[0]!r} has no price, and tenant {tenant!r} has a budget: "
            "a tenant with a budget runs only models with a price (COURIER_PRICES)",
        )


def worst_nano(cost: CostServices, submission: JobSubmission) -> int:
    price = cost.prices.price(submission.model)
    if price is None:
        return 0
    limits = bound(capped(submission.request))
    return price.worst_nano(limits.input_tokens, limits.output_tokens)


def check_budget(cost: CostServices, tenant: str, worst: int) -> None:
    """429 ``budget_exceeded`` when what the tenant's budget period has spent leaves no room
    for a call of this worst case (one round trip, only for a tenant with a budget)."""
    budget = cost.budgets.get(tenant)
    if budget is None:
        return
    spent, _ = cost.ledger.spent_nano(tenant, budget.period)
    if spent + worst > budget_nano(budget):
        raise budget_error(tenant, budget, spent, worst)


def budget_nano(budget: Budget) -> int:
    return round(budget.usd * 1e9)


def spend_key(tenant: str, budget: Budget) -> str:
    """The hash holding what the tenant spent in its budget's current period."""
    return keys.spend(tenant, period_ids(time.time())[budget.period])


def budget_error(tenant: str, budget: Budget, spent: int, worst: int) -> ApiError:
    """429 ``budget_exceeded``: ``spent`` (nano-USD) this period leaves no room for
    ``worst``; ``Retry-After`` when the period renews."""
    now = time.time()
    _, ends = period_bounds(budget.period, now)
    headers = {"Retry-After": str(max(1, math.ceil(ends - now)))} if ends else None
    renews = f"; it renews in {math.ceil((ends - now) / 60)} min" if ends else ""
    return ApiError(
        429,
        f"tenant {tenant!r} has spent ${usd(spent):.6f} of its {budget.period} budget of "
        f"${budget.usd:.2f}; this job's worst case (${usd(worst):.6f}) does not fit{renews}",
        "budget_exceeded",
        headers=headers,
    )


def replayed(store: JobStore, tenant: str, idempotency_key: str | None) -> Record | None:
    """The job an Idempotency-Key made before, if any: a replay is never refused."""
    if not idempotency_key:
        return None
    job_id = store.redis.get(keys.idempotency(tenant, idempotency_key))
    return store.get(str(job_id)) if job_id else None


RESPONSES: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Over the tenant's submission rate (`rate_limited`) or its cap on "
        f"unfinished jobs (`quota_exceeded`), {RESPONSES_429_BUDGET}; `Retry-After` says when "
        "to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}
