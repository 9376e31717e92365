"""Cluster-wide job metrics, kept in Redis and rendered by the API at ``GET /metrics``.

Why Redis and not a ``/metrics`` port per worker: workers scale out (``docker compose up
--scale worker=N``, several hosts, no fixed ports), come and go, and run under gevent; a
counter kept in the shared Redis needs no service discovery, survives worker restarts, and
any API process renders the same cluster-wide totals, so Prometheus scrapes one target.

Cost on the hot path: a worker only bumps a dict in memory (a few microseconds per job);
a background loop flushes the deltas every :data:`FLUSH_INTERVAL_S` with one pipelined
``HINCRBY``/``HINCRBYFLOAT`` per changed series. A ``kill -9`` loses at most that last
interval. Rare writers (the API's submissions and cancels, the sweeper's expiries) write
through at once with :func:`count_now` / :func:`count_finished`.

Each family is one hash ``courier:metrics:<family>``: field = label values joined by ``|``,
value = the count (or, for ``provider_latency``, per-bucket counts and a ``sum`` field).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from workers import keys
from workers.errors import CourierError
from workers.providers.base import Provider, ProviderResult

log = logging.getLogger("courier.metrics")

SEP = "|"
FLUSH_INTERVAL_S = 1.0

# Families: name → label names (the order of the values in a field).
SUBMITTED = "submitted"
FINISHED = "finished"
REQUEUED = "requeued"
PROVIDER_ERRORS = "provider_errors"
TOKENS = "tokens"
LATENCY = "provider_latency"
LABELS: dict[str, tuple[str, ...]] = {
    SUBMITTED: ("model", "priority", "kind"),
    FINISHED: ("status", "model", "priority"),
    REQUEUED: ("reason",),
    PROVIDER_ERRORS: ("model", "type"),
    TOKENS: ("model", "direction"),
    LATENCY: ("model", "le"),
}
# Seconds; provider calls take from a fraction of a second to minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
LATENCY_SUM = "sum"  # the "le" of the field that holds a model's sum of seconds
INF = "+Inf"


def field(*values: object) -> str:
    """One series' field: its label values joined by ``|`` (a ``|`` inside becomes ``/``)."""
    return SEP.join(str(v if v is not None else "").replace(SEP, "/") for v in values)


def bucket_for(seconds: float) -> str:
    """The (non-cumulative) latency bucket a call falls in, by its upper bound."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return INF


class MetricsBuffer:
    """Deltas counted in this process, waiting for the next flush."""

    def __init__(self) -> None:
        self._deltas: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # a gevent lock once threading is monkey-patched

    def add(self, family: str, key: str, amount: float = 1) -> None:
        """Counts are ints (``HINCRBY``), sums floats (``HINCRBYFLOAT``); never mix per key."""
        with self._lock:
            self._deltas[family, key] = self._deltas.get((family, key), 0) + amount

    def drain(self) -> dict[tuple[str, str], float]:
        with self._lock:
            deltas, self._deltas = self._deltas, {}
        return deltas

    def restore(self, deltas: Mapping[tuple[str, str], float]) -> None:
        """Put back deltas a failed flush could not write (they go with the next one)."""
        for (family, key), amount in deltas.items():
            self.add(family, key, amount)

    def flush(self, client: redis.Redis) -> int:
        """Write the deltas to Redis; returns how many series changed."""
        deltas = self.drain()
        if not deltas:
            return 0
        pipe = client.pipeline(transaction=True)  # all or nothing: a retry never counts twice
        for (family, key), amount in deltas.items():
            if isinstance(amount, int):
                pipe.hincrby(keys.metrics(family), key, amount)
            else:
                pipe.hincrbyfloat(keys.metrics(family), key, amount)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self.restore(deltas)
            log.warning("metrics flush failed (kept for the next one): %s", exc)
            return 0
        return len(deltas)


class WorkerMetrics:
    """What a worker process counts: job outcomes and provider calls."""

    def __init__(self, buffer: MetricsBuffer | None = None) -> None:
        self.buffer = buffer or MetricsBuffer()

    def job_finished(self, status: str, model: str | None, priority: str | None) -> None:
        self.buffer.add(FINISHED, field(status, model or "unknown", priority or "unknown"))

    def job_requeued(self, reason: str) -> None:
        self.buffer.add(REQUEUED, field(reason or "unknown"))

    def provider_call(
        self, model: str, seconds: float, error_type: str | None, result: ProviderResult | None
    ) -> None:
        add = self.buffer.add
        add(LATENCY, field(model, bucket_for(seconds)))
        add(LATENCY, field(model, LATENCY_SUM), float(round(seconds, 6)))
        if error_type is not None:
            add(PROVIDER_ERRORS, field(model, error_type))
        if result is not None:
            if result.usage.input_tokens:
                add(TOKENS, field(model, "input"), result.usage.input_tokens)
            if result.usage.output_tokens:
                add(TOKENS, field(model, "output"), result.usage.output_tokens)


class MeteredProvider:
    """A provider whose calls are timed and counted (latency, errors by type, tokens)."""

    __slots__ = ("inner", "metrics", "name")

    def __init__(self, inner: Provider, name: str, metrics: WorkerMetrics) -> None:
        self.inner = inner
        self.name = name
        self.metrics = metrics

    def complete(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        return self._metered(self.inner.complete, model, request, timeout)

    def embed(self, model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
        return self._metered(self.inner.embed, model, request, timeout)

    def _metered(
        self,
        call: Callable[..., ProviderResult],
        model: str,
        request: Mapping[str, Any],
        timeout: float,
    ) -> ProviderResult:
        started = time.monotonic()
        qualified = f"{self.name}:{model}"
        try:
            result = call(model, request, timeout=timeout)
        except CourierError as exc:
            self.metrics.provider_call(qualified, time.monotonic() - started, exc.error_type, None)
            raise
        self.metrics.provider_call(qualified, time.monotonic() - started, None, result)
        return result


def metered(
    get_provider: Callable[[str], Provider], metrics: Callable[[], WorkerMetrics]
) -> Callable[[str], Provider]:
    """Wrap a provider registry so every provider it hands out is metered (into the
    ``metrics()`` of the process at the time of the call)."""

    def get(name: str) -> Provider:
        return MeteredProvider(get_provider(name), name, metrics())

    return get


class Flusher:
    """Flushes a buffer to Redis every ``interval_s`` on a daemon thread (a greenlet under
    gevent), and once more on :meth:`stop`."""

    def __init__(
        self, buffer: MetricsBuffer, client: redis.Redis, interval_s: float = FLUSH_INTERVAL_S
    ) -> None:
        self.buffer = buffer
        self.client = client
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.buffer.flush(self.client)

    def stop(self) -> None:
        self._stop.set()
        self.buffer.flush(self.client)


_process: tuple[int, WorkerMetrics] | None = None


def worker_metrics() -> WorkerMetrics:
    """This process's metrics (a forked child gets its own, empty)."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), WorkerMetrics())
    return _process[1]


# ---- write-through, for rare events ------------------------------------------------------


def count_now(client: redis.Redis, family: str, *labels: object, amount: int = 1) -> None:
    client.hincrby(keys.metrics(family), field(*labels), amount)


def count_finished(client: redis.Redis, job_id: str, status: str) -> None:
    """Count a job that ended outside a worker's run (a cancel, an expiry while queued)."""
    model, priority = client.hmget(keys.job(job_id), ["model", "priority"])  # type: ignore[misc]
    count_now(client, FINISHED, status, _text(model) or "unknown", _text(priority) or "unknown")


# ---- reading, for /metrics ----------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(raw: Mapping[Any, Any], family: str) -> dict[tuple[str, ...], float]:
    """A family's hash → {label values: value}; fields of the wrong shape are skipped."""
    width = len(LABELS[family])
    out: dict[tuple[str, ...], float] = {}
    for name, value in raw.items():
        labels = tuple(_text(name).split(SEP))
        if len(labels) != width:
            continue
        try:
            out[labels] = float(_text(value))
        except ValueError:
            continue
    return out


def read_families(
    client: redis.Redis, families: Iterable[str] = tuple(LABELS)
) -> dict[str, dict[tuple[str, ...], float]]:
    """Every family's series, read in one round trip."""
    names = list(families)
    pipe = client.pipeline(transaction=False)
    for family in names:
        pipe.hgetall(keys.metrics(family))
    return {
        family: parse(raw or {}, family) for family, raw in zip(names, pipe.execute(), strict=True)
    }


def latency_histograms(
    series: Mapping[tuple[str, ...], float],
) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """``provider_latency`` series → per model: cumulative buckets (le, count) and the sum."""
    per_model: dict[str, dict[str, float]] = {}
    for (model, le), value in series.items():
        per_model.setdefault(model, {})[le] = value
    out: dict[str, tuple[list[tuple[str, float]], float]] = {}
    for model, values in per_model.items():
        total, buckets = 0.0, []
        for bound in (*(repr(b) for b in LATENCY_BUCKETS), INF):
            total += values.get(bound, 0.0)
            buckets.append((bound, total))
        out[model] = (buckets, values.get(LATENCY_SUM, 0.0))
    return out
