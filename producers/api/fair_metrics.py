"""``/metrics`` of the fair order between tenants (README, *Fair share*), read from Redis at
scrape time: ``courier_fair_starts`` and ``courier_fair_cost`` (tenant, priority: jobs started
by the intake and their cost in the fair order, tokens where a tpm limit applies, else 1),
``courier_fair_lag`` (tenant, priority: how far a tenant with work waiting is ahead of its
priority's clock, in cost / weight; the lowest starts next) and
``courier_fair_tenants_waiting`` (priority)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.celery import PRIORITIES
from core import keys
from core import metrics as wm
from producers.api.collectors import MAX_SERIES, counter

log = logging.getLogger("courier.api.metrics")


class FairCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterable[Metric]:
        try:
            return self._metrics()
        except redis.RedisError as exc:  # courier_redis_up says so
            log.warning("fair share metrics unavailable: %s", exc)
            return []

    def _metrics(self) -> list[Metric]:
        families = wm.read_families(self.client, (wm.FAIR_STARTED, wm.FAIR_COST))
        pipe = self.client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.hget(keys.fair_state(priority), "clock")
            pipe.zrange(keys.fair_tenants(priority), 0, MAX_SERIES - 1, withscores=True)
            pipe.zcard(keys.fair_tenants(priority))
        found = pipe.execute()
        lag = GaugeMetricFamily(
            "courier_fair_lag",
            "Virtual time of each tenant with work waiting, less its priority's clock "
            "(cost / weight; the lowest starts next)",
            labels=["tenant", "priority"],
        )
        waiting = GaugeMetricFamily(
            "courier_fair_tenants_waiting",
            "Tenants with jobs sorted and waiting, by priority",
            labels=["priority"],
        )
        for index, priority in enumerate(PRIORITIES):
            clock, active, count = found[3 * index : 3 * index + 3]
            for tenant, vt in active:
                lag.add_metric([tenant, priority], round(float(vt) - float(clock or 0), 6))
            waiting.add_metric([priority], int(count))
        return [
            counter(
                "courier_fair_starts",
                "Jobs the intake started, by tenant and priority",
                wm.FAIR_STARTED,
                families,
            ),
            counter(
                "courier_fair_cost",
                "Cost of those starts in the fair order (tokens where a tpm limit applies, "
                "else 1 each), by tenant and priority",
                wm.FAIR_COST,
                families,
            ),
            lag,
            waiting,
        ]
