"""``GET /v1/usage``: what the tenant spent in a period, against its budget, by model
(docs/contract.md, Cost, budgets and cache)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from core.cost.ledger import Period, period_bounds
from core.cost.prices import usd
from core.jobs import iso
from producers.api import errors
from producers.api.access.principal import UsageRead
from producers.api.deps import ServicesDep
from producers.api.limits import reject_unknown_query

router = APIRouter(prefix="/v1/usage", tags=["usage"], dependencies=[Depends(reject_unknown_query)])


class ModelUsage(BaseModel):
    spent_usd: float | None = Field(description="null when the model has no price")
    input_tokens: int
    output_tokens: int
    jobs: int = Field(description="jobs that called the model in the period")


class UsageReport(BaseModel):
    period: Period
    since: str | None = Field(description="when the period began (UTC); all time: the first call")
    spent_usd: float
    budget_usd: float | None = Field(description="the tenant's budget, when it is for this period")
    remaining_usd: float | None
    reserved_usd: float = Field(description="held now by calls in flight, at their worst case")
    by_model: dict[str, ModelUsage]


def by_model(raw: dict[str, str], priced: Any) -> dict[str, dict[str, Any]]:
    """``<model>|usd``, ``|in``, ``|out``, ``|jobs`` fields → per model."""
    models: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        model, sep, part = name.rpartition("|")
        if sep and part in ("usd", "in", "out", "jobs"):
            models.setdefault(model, {})[part] = int(float(value))
    return {
        model: {
            "spent_usd": usd(parts.get("usd", 0)) if priced(model) else None,
            "input_tokens": parts.get("in", 0),
            "output_tokens": parts.get("out", 0),
            "jobs": parts.get("jobs", 0),
        }
        for model, parts in sorted(models.items())
    }


@router.get(
    "",
    response_model=UsageReport,
    summary="What the tenant spent in a period, against its budget, by model",
    responses=errors.responses(401, 403, 422, 503),
)
def get_usage(
    caller: UsageRead,
    services: ServicesDep,
    period: Annotated[
        Period | None,
        Query(description="day and month are UTC; default: the budget's period, else month"),
    ] = None,
) -> JSONResponse:
    cost, tenant = services.cost, caller.tenant
    budget = cost.ledger.budget(tenant)
    chosen: Period = period or (budget.period if budget else "month")
    now = time.time()
    raw = cost.ledger.spend(tenant, chosen, now)
    spent = int(float(raw.get("usd") or 0))
    _, held = cost.ledger.spent_nano(tenant, chosen, now)
    start, _ = period_bounds(chosen, now)
    since = (
        iso(start)
        if start is not None
        else (iso(int(raw["since"]) / 1000) if raw.get("since") else None)
    )
    budget_usd = budget.usd if budget is not None and budget.period == chosen else None
    return JSONResponse(
        {
            "period": chosen,
            "since": since,
            "spent_usd": usd(spent),
            "budget_usd": budget_usd,
            "remaining_usd": None
            if budget_usd is None
            else max(0.0, round(budget_usd - usd(spent), 9)),
            "reserved_usd": usd(held),
            "by_model": by_model(raw, lambda model: cost.prices.price(model) is not None),
        }
    )
