"""Prometheus metrics of the API process, served at ``GET /metrics``.

Each app has its own registry (no module-level collectors, so several apps can live in
one process). Queue depth is read from Redis at scrape time: kombu's Redis transport
emulates message priorities with one list per priority step (``jobs.normal``,
``jobs.normal\\x06\\x163`` …), so a queue's depth is the sum of its lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.celery import ALL_QUEUES

log = logging.getLogger("courier.api.metrics")

KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu uses for one queue, one per priority step."""
    return [
        queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}"
        for step in KOMBU_PRIORITY_STEPS
    ]


def queue_depths(client: redis.Redis, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each Celery queue (not counting those a worker holds)."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for name in queue_lists(queue):
            pipe.llen(name)
    lengths = [int(n) for n in pipe.execute()]
    steps = len(KOMBU_PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(names)}


class QueueDepthCollector(Collector):
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "courier_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
        )
        try:
            depths = queue_depths(self.client)
        except redis.RedisError as exc:
            log.warning("queue depth unavailable: %s", exc)
            return []
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        return [family]


class ApiMetrics:
    def __init__(self, client: redis.Redis, waiting: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.jobs_submitted = Counter(
            "courier_jobs_submitted",
            "Jobs accepted by the API",
            ["model", "priority", "kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "courier_api_requests",
            "HTTP requests answered by the API",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.long_polls = Gauge(
            "courier_api_long_polls", "Requests waiting on ?wait=", registry=self.registry
        )
        if waiting is not None:
            self.long_polls.set_function(waiting)
        self.registry.register(QueueDepthCollector(client))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts every answered request by route template (not raw path), method and status."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ApiMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                route = scope.get("route")
                label = getattr(route, "path", None) or "unmatched"
                metrics.requests.labels(label, scope["method"], str(status)).inc()
