"""The collectors behind ``/metrics`` that read cluster-wide state at scrape time: Redis
(jobs, queues, webhooks, limiter, :mod:`workers.metrics` counters) and the broker's queues."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from kombu.connection import Connection
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from config.celery import ALL_QUEUES, JOB_QUEUES, PRIORITIES, celery_config
from config.settings import Settings
from core import keys
from core import metrics as wm
from core.callbacks import delivery_stats
from core.connections import redis_client
from core.fair import held, priority_of
from core.ratelimit import limiter_state
from core.replication import replicas_in_sync

log = logging.getLogger("courier.api.metrics")

MAX_SERIES = 500  # per family: beyond it the smallest series are summed as "_other"
OTHER = "_other"
# Families rendered by their own collectors (producers.api.cost_metrics, .fair_metrics)
OTHER_COLLECTORS = (wm.COST, wm.CACHE, wm.FAIR_STARTED, wm.FAIR_COST)


def queue_depths(client: redis.Redis, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each Celery queue on a Redis broker (not those a worker holds),
    with those the intake sorted into tenant lists (:mod:`core.fair`)."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for name in keys.broker_lists([queue]):
            pipe.llen(name)
    lengths = [int(n) for n in pipe.execute()]
    steps = len(keys.PRIORITY_STEPS)
    sorted_in = held(client, [priority_of(q) for q in names if q in JOB_QUEUES])
    return {
        q: sum(lengths[i * steps : (i + 1) * steps]) + sorted_in.get(priority_of(q), 0)
        for i, q in enumerate(names)
    }


def broker_queue_depths(
    url: str, queues: Iterable[str] = ALL_QUEUES, transport_options: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """The same on any other kombu broker (RabbitMQ, another Redis through Sentinel): a
    passive declare per queue."""
    out: dict[str, int] = {}
    with Connection(url, connect_timeout=2, transport_options=transport_options) as conn:
        conn.ensure_connection(max_retries=1)
        for queue in queues:
            channel = conn.channel()
            try:
                out[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # not declared yet (404 closes the channel): nothing waits
                out[queue] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return out


class QueueDepthCollector(Collector):
    """``courier_queue_depth{queue}``, from whichever broker Celery uses."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.url = settings.celery_broker_url
        self.transport_options = celery_config(settings)["broker_transport_options"]
        self.client: redis.Redis | None = None
        if settings.broker_is_store:
            self.client = client
        elif self.url.startswith(("redis://", "rediss://", "unix://")):
            self.client = redis_client(self.url, max_connections=4)

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "courier_queue_depth", "Messages waiting in each Celery queue", labels=["queue"]
        )
        try:
            if self.client is not None:
                depths = queue_depths(self.client)
            else:
                depths = broker_queue_depths(self.url, transport_options=self.transport_options)
        except Exception as exc:
            log.warning("queue depth unavailable: %s", exc)
            return []
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        return [family]


def capped(series: Mapping[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
    """At most :data:`MAX_SERIES` series: the rest (a flood of made-up model names, say)
    are summed into one whose labels are all ``_other``."""
    if len(series) <= MAX_SERIES:
        return dict(series)
    ordered = sorted(series.items(), key=lambda item: item[1], reverse=True)
    kept = dict(ordered[: MAX_SERIES - 1])
    rest = sum(value for _, value in ordered[MAX_SERIES - 1 :])
    width = len(next(iter(series)))
    kept[(OTHER,) * width] = kept.get((OTHER,) * width, 0.0) + rest
    return kept


def counter(
    name: str, doc: str, family: str, families: Mapping[str, Mapping[tuple[str, ...], float]]
) -> CounterMetricFamily:
    metric = CounterMetricFamily(name, doc, labels=list(wm.LABELS[family]))
    for labels, value in capped(families.get(family, {})).items():
        metric.add_metric(list(labels), value)
    return metric


class ClusterCollector(Collector):
    """Everything cluster-wide that lives in Redis, read in one round trip per scrape
    (plus the limiter's own)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("courier_redis_up", "1 when Redis answered this scrape")
        try:
            out = self._jobs() + self._webhooks()
        except redis.RedisError as exc:
            log.warning("cluster metrics unavailable: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        try:
            out += self._limiter()
        except redis.RedisError as exc:
            log.warning("limiter state unavailable: %s", exc)
        try:
            out.append(self._replicas())
        except redis.RedisError as exc:  # INFO may be refused by a managed Redis
            log.warning("replication state unavailable: %s", exc)
        return [up, *out]

    def _replicas(self) -> Metric:
        """Replicas in sync with the master now: below COURIER_REDIS_MIN_REPLICAS, submissions
        answer 503 (README, High availability)."""
        return GaugeMetricFamily(
            "courier_redis_replicas", "Replicas connected to the Redis master and in sync",
            value=replicas_in_sync(self.client),
        )  # fmt: skip

    def _jobs(self) -> list[Metric]:
        families = wm.read_families(
            self.client, [f for f in wm.LABELS if f not in OTHER_COLLECTORS]
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(keys.RUNNING)
        pipe.zcard(keys.SCHEDULED)
        pipe.llen(keys.SET_ASIDE)
        for priority in PRIORITIES:
            pipe.zcard(keys.queued(priority))
            pipe.zrange(keys.queued(priority), 0, 0, withscores=True)
        running, scheduled, set_aside, *per_priority = pipe.execute()
        now_ms = time.time() * 1000

        queued = GaugeMetricFamily(
            "courier_jobs_queued", "Jobs waiting in a queue, by priority", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "courier_queue_oldest_age_seconds",
            "How long the oldest queued job of each priority has waited (0: none waits)",
            labels=["priority"],
        )
        for index, priority in enumerate(PRIORITIES):
            size, first = per_priority[2 * index], per_priority[2 * index + 1]
            queued.add_metric([priority], int(size))
            age = max(0.0, (now_ms - float(first[0][1])) / 1000) if first else 0.0
            oldest.add_metric([priority], round(age, 3))

        latency = HistogramMetricFamily(
            "courier_provider_call_seconds",
            "Provider call latency (every call, answered or failed), by model",
            labels=["model"],
        )
        histograms = wm.latency_histograms(families.get(wm.LATENCY, {}))
        for model, (buckets, total) in list(histograms.items())[:MAX_SERIES]:
            latency.add_metric([model], buckets, total)
        return [
            counter("courier_jobs_submitted", "Jobs accepted by the API", wm.SUBMITTED, families),
            counter(
                "courier_jobs_finished",
                "Jobs that reached an end status (succeeded, failed, cancelled, expired)",
                wm.FINISHED,
                families,
            ),
            counter(
                "courier_jobs_requeued",
                "Runs that handed their job back for later, by reason",
                wm.REQUEUED,
                families,
            ),
            counter(
                "courier_provider_errors",
                "Provider calls that failed, by model and error type",
                wm.PROVIDER_ERRORS,
                families,
            ),
            counter("courier_tokens", "Tokens used, by model and direction", wm.TOKENS, families),
            counter(
                "courier_conversation_turns",
                "Jobs submitted with parent_job_id, by how they started: ready (the parent had "
                "succeeded), waiting (for the parent), failed (parent_failed)",
                wm.CONVERSATION_TURNS,
                families,
            ),
            counter(
                "courier_breaker_transitions",
                "Circuit breaker changes, by model and the state entered (open, half_open, closed)",
                wm.BREAKER_TRANSITIONS,
                families,
            ),
            self._breakers(),
            latency,
            GaugeMetricFamily("courier_jobs_running", "Jobs a worker runs now", value=running),
            GaugeMetricFamily(
                "courier_jobs_scheduled",
                "Jobs waiting for a retry, a rate limit or a circuit to close",
                value=scheduled,
            ),
            queued,
            oldest,
            GaugeMetricFamily(
                "courier_messages_set_aside",
                "Messages on the job queues that named no job, kept aside (newest 1,000)",
                value=set_aside,
            ),
        ]

    def _breakers(self) -> Metric:
        """``courier_breaker_open{model, state}``: 1 per circuit not closed now."""
        gauge = GaugeMetricFamily(
            "courier_breaker_open",
            "Circuits open or half-open now, by model (closed circuits are not listed)",
            labels=["model", "state"],
        )
        raw: dict[bytes | str, bytes | str] = self.client.hgetall(keys.BREAKERS)  # type: ignore[assignment]
        models = [wm.text(m) for m in raw][:MAX_SERIES]
        pipe = self.client.pipeline(transaction=False)
        for model in models:
            pipe.hget(keys.breaker(model), "state")
        for model, state in zip(models, pipe.execute(), strict=True):
            if state:  # else its record expired: the circuit is closed
                gauge.add_metric([model, wm.text(state)], 1)
        return gauge

    def _webhooks(self) -> list[Metric]:
        stats = delivery_stats(self.client)
        pending = int(self.client.zcard(keys.CALLBACKS_SCHEDULED))  # type: ignore[arg-type]
        attempts = CounterMetricFamily(
            "courier_webhook_attempts", "Webhook delivery attempts", value=stats["attempts"]
        )
        deliveries = CounterMetricFamily(
            "courier_webhook_deliveries",
            "Webhook events by final outcome (failed: the schedule used up or a 410; "
            "the dead letters)",
            labels=["outcome"],
        )
        for outcome in ("delivered", "failed"):
            deliveries.add_metric([outcome], stats[outcome])
        scheduled = GaugeMetricFamily(
            "courier_webhooks_scheduled", "Webhook events waiting for an attempt", value=pending
        )
        return [attempts, deliveries, scheduled]

    def _limiter(self) -> list[Metric]:
        labels = ["pattern", "api_key"]
        gauges = {
            name: GaugeMetricFamily(f"courier_ratelimit_{name}", doc, labels=[*labels, "resource"])
            for name, doc in (
                ("limit", "Effective limit per minute (configured, or lower as learned)"),
                ("remaining", "Requests or tokens left in the shared budget now"),
            )
        }
        in_flight = GaugeMetricFamily(
            "courier_ratelimit_in_flight", "Provider calls in flight", labels=labels
        )
        waiters = GaugeMetricFamily(
            "courier_ratelimit_waiters",
            "Jobs waiting for the budget, by priority",
            labels=[*labels, "priority"],
        )
        cooldown = GaugeMetricFamily(
            "courier_ratelimit_cooldown_seconds",
            "Time left of a cool-down set by a provider 429",
            labels=labels,
        )
        for state in limiter_state(self.client):
            key = [str(state["pattern"]), str(state["api_key"])]
            for resource in ("requests", "tokens"):
                if state[f"limit_{resource}"] is not None:
                    gauges["limit"].add_metric([*key, resource], state[f"limit_{resource}"])
                if state[f"remaining_{resource}"] is not None:
                    gauges["remaining"].add_metric([*key, resource], state[f"remaining_{resource}"])
            in_flight.add_metric(key, state["in_flight"])
            for priority, count in state["waiters"].items():
                waiters.add_metric([*key, priority], count)
            cooldown.add_metric(key, state["cooldown_s"])
        return [*gauges.values(), in_flight, waiters, cooldown]
