"""What a worker process counts, kept in memory and flushed to Redis (:mod:`core.metrics`
names the families; the API renders them at ``GET /metrics``)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from core import keys
from core.errors import CourierError
from core.metrics import (
    FINISHED,
    FLUSH_INTERVAL_S,
    LATENCY,
    LATENCY_SUM,
    PROVIDER_ERRORS,
    REQUEUED,
    TOKENS,
    bucket_for,
    field,
)
from core.results import ProviderResult
from workers.outage import redis_outage
from workers.providers.base import Provider

log = logging.getLogger("courier.metrics")


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
        except redis.ConnectionError as exc:
            self.restore(deltas)
            redis_outage.lost("metrics", exc)
            return 0
        except redis.RedisError as exc:
            self.restore(deltas)
            log.warning("metrics flush failed (kept for the next one): %s", exc)
            return 0
        redis_outage.back()
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

    def stream_complete(
        self,
        model: str,
        request: Mapping[str, Any],
        *,
        timeout: float,
        chunk_timeout: float,
        on_text: Callable[[str], None],
    ) -> ProviderResult:
        def call(model: str, request: Mapping[str, Any], *, timeout: float) -> ProviderResult:
            return self.inner.stream_complete(
                model, request, timeout=timeout, chunk_timeout=chunk_timeout, on_text=on_text
            )

        return self._metered(call, model, request, timeout)

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
