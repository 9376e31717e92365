"""``/metrics`` of cost, budgets and the answer cache, read from Redis at scrape time:
``courier_cost_usd`` (tenant, model: every call's true cost, written by the ledger's settle),
``courier_budget_usd`` and ``courier_budget_remaining_usd`` (tenant, period),
``courier_budget_reserved_usd`` (tenant: held by calls in flight), and
``courier_cache_lookups`` (model, outcome ``hit`` | ``miss``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import keys
from core import metrics as wm
from core.cost.ledger import Ledger, period_ids
from core.cost.prices import usd
from producers.api.collectors import MAX_SERIES, capped

log = logging.getLogger("courier.api.metrics")


class CostCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.ledger = Ledger(client)

    def collect(self) -> Iterable[Metric]:
        try:
            return [*self._counters(), *self._budgets()]
        except redis.RedisError as exc:  # courier_redis_up says so
            log.warning("cost metrics unavailable: %s", exc)
            return []

    def _counters(self) -> list[Metric]:
        families = wm.read_families(self.client, (wm.COST, wm.CACHE))
        cost = CounterMetricFamily(
            "courier_cost_usd",
            "True cost of provider calls in USD, by tenant and model (models with a price)",
            labels=["tenant", "model"],
        )
        for labels, nano in capped(families[wm.COST]).items():
            cost.add_metric(list(labels), usd(nano))
        lookups = CounterMetricFamily(
            "courier_cache_lookups",
            "Submissions that asked for the answer cache, by model and outcome (hit, miss)",
            labels=["model", "outcome"],
        )
        for labels, count in capped(families[wm.CACHE]).items():
            lookups.add_metric(list(labels), count)
        return [cost, lookups]

    def _budgets(self) -> list[Metric]:
        budgets = list(self.ledger.budgets().items())[:MAX_SERIES]
        ids = period_ids(time.time())
        pipe = self.client.pipeline(transaction=False)
        for tenant, budget in budgets:
            pipe.hget(keys.spend(tenant, ids[budget.period]), "usd")
            pipe.hget(keys.budget_held(tenant), "total")
        answers = pipe.execute() if budgets else []
        total = GaugeMetricFamily(
            "courier_budget_usd", "The tenant's budget per period", labels=["tenant", "period"]
        )
        remaining = GaugeMetricFamily(
            "courier_budget_remaining_usd",
            "The budget less what the period has spent",
            labels=["tenant", "period"],
        )
        reserved = GaugeMetricFamily(
            "courier_budget_reserved_usd",
            "Held now by calls in flight, at their worst case",
            labels=["tenant"],
        )
        for index, (tenant, budget) in enumerate(budgets):
            spent, held = (int(float(v or 0)) for v in answers[2 * index : 2 * index + 2])
            total.add_metric([tenant, budget.period], budget.usd)
            remaining.add_metric([tenant, budget.period], max(0.0, budget.usd - usd(spent)))
            reserved.add_metric([tenant], usd(held))
        return [total, remaining, reserved]
