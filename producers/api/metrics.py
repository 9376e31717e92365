"""Prometheus metrics, served by the API at ``GET /metrics``.

Two kinds of series:

- **Cluster-wide**, read from Redis at scrape time (so every API process renders the same
  values and Prometheus needs one target, however many workers run): jobs submitted and
  finished (status, model, priority), requeues, provider call latency, errors by type and
  tokens by model (:mod:`workers.metrics`); jobs running, scheduled and queued, the oldest
  queued job's age per priority; broker queue depth; webhook deliveries; limiter state.
- **Per process**: HTTP requests by route and status, and long-polls in progress. When the
  API runs several processes (``uvicorn --workers N``, gunicorn), point
  ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory, wiped at each start, shared by them:
  the request counters are then summed over the processes.

Each app has its own registry (no module-level collectors, so several apps can live in one
process). Redis being down never fails a scrape: ``courier_redis_up`` says 0 instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings, get_settings
from core import metrics as wm
from producers.api.collectors import (
    ClusterCollector,
    QueueDepthCollector,
    queue_depths,
)
from producers.api.cost_metrics import CostCollector
from producers.api.fair_metrics import FairCollector

log = logging.getLogger("courier.api.metrics")
__all__ = ["ApiMetrics", "RequestMetricsMiddleware", "queue_depths"]


class LocalCollector(Collector):
    """This process's long-polls and event streams in progress."""

    def __init__(
        self, waiting: Callable[[], float] | None, streams: Callable[[], float] | None = None
    ) -> None:
        self.waiting = waiting
        self.streams = streams

    def collect(self) -> Iterable[Metric]:
        out = []
        if self.waiting is not None:
            out.append(
                GaugeMetricFamily(
                    "courier_api_long_polls",
                    "Requests waiting on ?wait= (this API process)",
                    value=self.waiting(),
                )
            )
        if self.streams is not None:
            out.append(
                GaugeMetricFamily(
                    "courier_api_event_streams",
                    "Open GET /v1/jobs/{id}/events streams (this API process)",
                    value=self.streams(),
                )
            )
        return out


class ClusterCounter:
    """A counter kept in Redis (``HINCRBY``), used like prometheus_client's:
    ``counter.labels(*values).inc()``; rendered by :class:`ClusterCollector`."""

    def __init__(self, client: redis.Redis, family: str) -> None:
        self.client = client
        self.family = family

    def labels(self, *values: object) -> _ClusterChild:
        return _ClusterChild(self, values)


class _ClusterChild:
    def __init__(self, parent: ClusterCounter, values: tuple[object, ...]) -> None:
        self.parent = parent
        self.values = values

    def inc(self, amount: int = 1) -> None:
        try:
            wm.count_now(self.parent.client, self.parent.family, *self.values, amount=amount)
        except redis.RedisError as exc:  # the job is accepted: a lost count is the lesser harm
            log.warning("%s not counted: %s", self.parent.family, exc)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def prepare_multiprocess_dir() -> str:
    """``PROMETHEUS_MULTIPROC_DIR`` for the API's processes, set before any of them imports
    prometheus_client: a new temporary directory when unset, else the one named, emptied
    (counts a previous run left there would add up with this run's)."""
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not named:
        named = tempfile.mkdtemp(prefix="courier-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = named
        return named
    os.makedirs(named, exist_ok=True)
    for entry in os.scandir(named):
        if entry.is_file() and entry.name.endswith(".db"):  # what prometheus_client writes
            os.unlink(entry.path)
    return named


class ApiMetrics:
    def __init__(
        self,
        client: redis.Redis,
        waiting: Callable[[], float] | None = None,
        settings: Settings | None = None,
        streams: Callable[[], float] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.registry = CollectorRegistry()  # what /metrics renders
        own = self.registry
        if multiprocess_dir():
            # Per-process counters live in mmap files; the renderer sums every process's.
            own = CollectorRegistry()
            MultiProcessCollector(self.registry)
        self.requests = Counter(
            "courier_api_requests",
            "HTTP requests answered by the API",
            ["route", "method", "status"],
            registry=own,
        )
        self.auth_events = Counter(
            "courier_auth_events",
            "Tokens issued (auth.token) and credentials refused (auth.denied), by HTTP status",
            ["action", "status"],
            registry=own,
        )
        self.jobs_submitted = ClusterCounter(client, wm.SUBMITTED)
        self.registry.register(LocalCollector(waiting, streams))
        self.registry.register(ClusterCollector(client))
        self.registry.register(CostCollector(client))
        self.registry.register(FairCollector(client))
        self.registry.register(QueueDepthCollector(client, settings))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Counts every answered request by route template (not raw path), method and status,
    names it with an ``X-Request-ID`` header, and writes the audit entry of the audited
    actions (:mod:`producers.api.audit`)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], ApiMetrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from producers.api.audit import Audit

        audit = Audit.begin(scope)
        status = 500
        request_id = "req_" + secrets.token_hex(10)
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers.append("X-Request-ID", request_id)
            elif audit is not None and message["type"] == "http.response.body":
                audit.body(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics = self.metrics()
            if metrics is not None:
                metrics.requests.labels(label, scope["method"], str(status)).inc()
            if audit is not None:
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                await audit.end(scope, label, status, request_id, duration_ms)
