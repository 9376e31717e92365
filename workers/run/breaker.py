"""Circuit breakers per provider:model, shared by every worker through Redis.

A breaker answers two questions on the job's path: may a call to this model go now
(:meth:`admit`), and what came of it (:meth:`record`). Three kinds (``COURIER_BREAKER``):

``rate`` (the default): opens when failures reach ``COURIER_BREAKER_FAILURE_RATE`` of the
calls started in the last ``COURIER_BREAKER_WINDOW_S`` seconds, once at least
``COURIER_BREAKER_MIN_CALLS`` started; the design of resilience4j's time-based window and
Envoy's failure-percentage outlier detection. A streak is the wrong signal under
concurrency: with hundreds of calls in flight, five failures in a row come within half a
second at a 30 % fault rate. Calls are counted when they *start*, failures when they end:
a provider's errors come back at once while its answers take seconds, so among the calls
that *ended* in the first moments of a burst nearly all are failures, at any fault rate.
Failures are retryable provider faults (5xx, 529, timeouts, connection errors); a 429 means
the provider is up and rate-limiting (the limiter and Retry-After handle it) and a final
error (400, 401, …) is the request's fault, so neither counts, as a call or as a failure.
Open for ``COURIER_BREAKER_COOLDOWN_S``, then half-open: ``COURIER_BREAKER_PROBES`` calls go
through; when they all succeed it closes (a fresh window), when one fails it opens again.
Jobs that meet an open circuit go to their next fallback model, or wait in the durable
schedule (``waiting_for: circuit_open``).

``streak``: the breaker before 2026-12-07, kept as it was: ``COURIER_BREAKER_THRESHOLD``
consecutive retryable failures (429s included) open it; after the cool-down every call
goes through, a success closes it and a failure opens it again.

``off``: no breaker.

The rate breaker's hot path: a worker counts the calls it starts in memory and sends them
with its next failure, or every :data:`CALLS_FLUSH_S`; a model known closed is not asked
about again for :data:`CLOSED_CACHE_S`. A healthy model costs about four breaker round trips
a second per worker process, not one per call.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from config.settings import Settings
from core import keys, scripts
from core.errors import CourierError, RateLimited, RetryableError
from core.metrics import BREAKER_TRANSITIONS
from core.metrics import field as metric_field

log = logging.getLogger("courier.breaker")

CLOSED_CACHE_S = 0.5  # a model known closed is taken as closed this long without asking
CALLS_FLUSH_S = 0.5  # calls counted in memory reach Redis at least this often
HALF_OPEN_RETRY_S = 1.0  # a call that finds the probes out asks again about this much later


@dataclass(frozen=True, slots=True)
class Admission:
    """May a call go now? ``wait_s`` > 0: no, ask again then (or use a fallback)."""

    wait_s: float = 0.0
    probe: bool = False  # the call is one of a half-open circuit's probes: report its outcome


GO = Admission()


class CircuitBreaker(Protocol):
    def admit(self, model: str) -> Admission: ...

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        """The call admitted by ``admission`` ended: ``error`` None for a success."""
        ...

    def release(self, model: str, admission: Admission) -> None:
        """The admitted call was never made (the rate limiter refused it, the job ended)."""
        ...


def is_failure(error: CourierError | None) -> bool:
    """Whether an outcome says the provider is down (see the module docstring)."""
    return isinstance(error, RetryableError) and not isinstance(error, RateLimited)


@dataclass
class RateBreaker:
    client: redis.Redis
    failure_rate: float = 0.5
    window_s: float = 5.0
    min_calls: int = 20
    cooldown_s: float = 10.0
    probes: int = 3
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._admit = self.client.register_script(scripts.BREAKER_ADMIT)
        self._record = self.client.register_script(scripts.BREAKER_RECORD)
        self._closed_until: dict[str, float] = {}
        self._open_until: dict[str, float] = {}
        self._calls: dict[str, int] = {}  # calls started and not yet sent (less ignored ones)
        self._sent_at: dict[str, float] = {}
        # Long enough to outlive an open circuit and its probes, and the window.
        self._ttl_s = int(max(self.window_s, self.cooldown_s) * 3 + 60)

    def admit(self, model: str) -> Admission:
        now = self.clock()
        # Open first: a "closed" answer sent before it opened may land after the "open" one.
        if self._open_until.get(model, 0.0) > now:
            return Admission(wait_s=self._open_until[model] - now)
        if self._closed_until.get(model, 0.0) <= now:
            state, ms = self._admit(
                keys=self._keys(model), args=[*self._common(model), self.probes, self.cooldown_s]
            )
            if state == 3:
                return Admission(probe=True)
            if state == 1:
                self._open_until[model] = now + ms / 1000
                return Admission(wait_s=ms / 1000)
            if state == 2:  # half-open with its probes out: ask again soon (spread out, so
                # the jobs waiting do not all come back at once), or when they are given up
                wait = min(ms / 1000, HALF_OPEN_RETRY_S) if ms > 0 else HALF_OPEN_RETRY_S
                return Admission(wait_s=max(0.05, wait * random.uniform(1.0, 1.5)))
            self._closed_until[model] = now + CLOSED_CACHE_S
        self._count(model, 1)
        return GO

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        failed = is_failure(error)
        if admission.probe:
            if error is None or failed:
                self._send(model, 0, 0, "fail" if failed else "ok")
            else:  # a 429 or a final error says nothing about whether it is up
                self._send(model, 0, 0, "release")
            return
        if error is not None and not failed:
            self._count(model, -1)  # not a call that tells: out of the window
        if failed:
            self._flush(model, 1)
        elif self.clock() - self._sent_at.get(model, 0.0) >= CALLS_FLUSH_S:
            self._flush(model, 0)

    def release(self, model: str, admission: Admission) -> None:
        if admission.probe:
            self._send(model, 0, 0, "release")
        else:
            self._count(model, -1)

    def _count(self, model: str, n: int) -> None:
        with self._lock:
            self._calls[model] = self._calls.get(model, 0) + n

    def _flush(self, model: str, failures: int) -> None:
        now = self.clock()
        with self._lock:
            calls = self._calls.pop(model, 0)
            self._sent_at[model] = now
        if self._open_until.get(model, 0.0) > now:
            return  # calls from before it opened: no news
        if calls or failures:
            self._send(model, calls, failures, "")

    def _send(self, model: str, calls: int, failures: int, probe: str) -> None:
        state, ms, changed = self._record(
            keys=self._keys(model),
            args=[
                *self._common(model),
                calls,
                failures,
                probe,
                self.window_s,
                self.min_calls,
                self.failure_rate,
                self.cooldown_s,
                self.probes,
            ],
        )
        now = self.clock()
        if state == 1:
            self._open_until[model] = now + ms / 1000
            self._closed_until.pop(model, None)
        elif state == 0:  # (an open circuit learnt from a later answer still wins in admit)
            self._closed_until[model] = now + CLOSED_CACHE_S
        if changed == 1 and probe:
            log.warning("circuit for %s open again for %gs: a probe call failed", model, ms / 1000)
        elif changed == 1:
            log.warning(
                "circuit for %s open for %gs: %d%% or more of the calls of the last %gs failed",
                model,
                ms / 1000,
                round(self.failure_rate * 100),
                self.window_s,
            )
        elif changed == 2:
            log.warning("circuit for %s closed: %d probe calls succeeded", model, self.probes)

    def _keys(self, model: str) -> list[str]:
        return [keys.breaker(model), keys.BREAKERS, keys.metrics(BREAKER_TRANSITIONS)]

    def _common(self, model: str) -> list[Any]:
        return [model, metric_field(model, ""), self._ttl_s]


@dataclass
class StreakBreaker:
    """The breaker before 2026-12-07 (``COURIER_BREAKER=streak``), unchanged."""

    client: redis.Redis
    threshold: int = 5
    cooldown_s: float = 30.0

    # A model seen with no failures at all is taken as closed for this long without asking
    # Redis again: the hot path of a healthy provider costs no breaker round trips.
    clean_cache_s: float = 1.0

    def __post_init__(self) -> None:
        self._record_failure = self.client.register_script(scripts.RECORD_FAILURE)
        self._clean_until: dict[str, float] = {}

    def admit(self, model: str) -> Admission:
        return Admission(wait_s=self.open_for(model))

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        if error is None:
            self.record_success(model)
        elif isinstance(error, RetryableError):
            self.record_failure(model)

    def release(self, model: str, admission: Admission) -> None:
        return None

    def open_for(self, model: str) -> float:
        """Seconds the circuit for ``model`` stays open; 0 when calls may go through."""
        now = time.monotonic()
        if self._clean_until.get(model, 0.0) > now:
            return 0.0
        failures, open_until = self.client.hmget(keys.breaker(model), ["failures", "open_until"])  # type: ignore[misc]
        if failures is None:
            self._clean_until[model] = now + self.clean_cache_s
            return 0.0
        if not open_until:
            return 0.0
        return max(0.0, float(open_until) - time.time())

    def record_failure(self, model: str) -> bool:
        """Count a retryable failure; True when this opened (or re-opened) the circuit."""
        self._clean_until.pop(model, None)
        until = time.time() + self.cooldown_s
        return bool(self._record_failure(keys=[keys.breaker(model)], args=[self.threshold, until]))

    def record_success(self, model: str) -> None:
        if self._clean_until.get(model, 0.0) > time.monotonic():
            return  # nothing to reset
        self.client.delete(keys.breaker(model))


class NoBreaker:
    """``COURIER_BREAKER=off``: every call goes."""

    def admit(self, model: str) -> Admission:
        return GO

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        return None

    def release(self, model: str, admission: Admission) -> None:
        return None


def build_breaker(settings: Settings, client: redis.Redis) -> CircuitBreaker:
    """The breaker ``COURIER_BREAKER`` names, with its settings."""
    if settings.breaker == "off":
        return NoBreaker()
    if settings.breaker == "streak":
        return StreakBreaker(
            client, threshold=settings.breaker_threshold, cooldown_s=settings.breaker_cooldown_s
        )
    if "breaker_threshold" in settings.model_fields_set:
        log.warning(
            "COURIER_BREAKER_THRESHOLD applies only to COURIER_BREAKER=streak; the rate "
            "breaker opens when COURIER_BREAKER_FAILURE_RATE of the calls of the last "
            "COURIER_BREAKER_WINDOW_S failed (COURIER_BREAKER=off: no breaker)"
        )
    return RateBreaker(
        client,
        failure_rate=settings.breaker_failure_rate,
        window_s=settings.breaker_window_s,
        min_calls=settings.breaker_min_calls,
        cooldown_s=settings.breaker_cooldown_s,
        probes=settings.breaker_probes,
    )
