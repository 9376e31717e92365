"""Circuit breakers per provider:model, shared by every worker through Redis.

A breaker answers two questions on the job's path: may a call to this model go now
(:meth:`admit`), and what came of it (:meth:`record`). Three kinds (``COURIER_BREAKER``):

``rate`` (the default): opens when at least ``COURIER_BREAKER_FAILURE_RATE`` of the last
``COURIER_BREAKER_WINDOW`` calls failed, once the window holds
``COURIER_BREAKER_MIN_CALLS``; the design of resilience4j's count-based window. A streak
is the wrong signal under concurrency: with hundreds of calls in flight, five failures in
a row come within half a second at a 30 % fault rate, while a rate over the last 40 calls
stays near the true share of failures. Failures are retryable provider faults (5xx, 529,
timeouts, connection errors); a 429 means the provider is up and rate-limiting (the
limiter and Retry-After handle it) and a final error (400, 401, …) is the request's fault,
so neither counts. Open for ``COURIER_BREAKER_COOLDOWN_S``, then half-open:
``COURIER_BREAKER_PROBES`` calls go through; when they all succeed it closes (a fresh
window), when one fails it opens again. Jobs that meet an open circuit go to their next
fallback model, or wait in the durable schedule (``waiting_for: circuit_open``).

``streak``: the breaker before 2026-12-07, kept as it was: ``COURIER_BREAKER_THRESHOLD``
consecutive retryable failures (429s included) open it; after the cool-down every call
goes through, a success closes it and a failure opens it again.

``off``: no breaker.

The rate breaker's hot path: a worker counts successes in memory and sends them with its
next failure, or every :data:`SUCCESS_FLUSH_S`; a model known closed is not asked about
again for :data:`CLOSED_CACHE_S`. A healthy model costs about four breaker round trips a
second per worker process, not one per call.
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
SUCCESS_FLUSH_S = 0.5  # successes counted in memory reach Redis at least this often
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
    window: int = 40
    min_calls: int = 20
    cooldown_s: float = 10.0
    probes: int = 3
    forget_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._admit = self.client.register_script(scripts.BREAKER_ADMIT)
        self._record = self.client.register_script(scripts.BREAKER_RECORD)
        self._closed_until: dict[str, float] = {}
        self._open_until: dict[str, float] = {}
        self._pending: dict[str, int] = {}  # successes not yet sent
        self._sent_at: dict[str, float] = {}
        # Long enough to outlive an open circuit and its probes; a quiet window is
        # forgotten anyway.
        self._ttl_s = int(max(self.forget_s, self.cooldown_s) * 3 + 60)

    def admit(self, model: str) -> Admission:
        now = self.clock()
        # Open first: a "closed" answer sent before it opened may land after the "open" one.
        if self._open_until.get(model, 0.0) > now:
            return Admission(wait_s=self._open_until[model] - now)
        if self._closed_until.get(model, 0.0) > now:
            return GO
        state, ms = self._admit(
            keys=self._keys(model), args=[*self._common(model), self.probes, self.cooldown_s]
        )
        if state == 0:
            self._closed_until[model] = now + CLOSED_CACHE_S
            return GO
        if state == 3:
            return Admission(probe=True)
        if state == 1:
            self._open_until[model] = now + ms / 1000
            return Admission(wait_s=ms / 1000)
        # Half-open with its probes out: ask again soon (spread out, so the jobs waiting do
        # not all come back at once), or when the probes are given up.
        wait = min(ms / 1000, HALF_OPEN_RETRY_S) if ms > 0 else HALF_OPEN_RETRY_S
        return Admission(wait_s=max(0.05, wait * random.uniform(1.0, 1.5)))

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        failed = is_failure(error)
        if admission.probe:
            if error is None or failed:
                self._send(model, 0, 0, "fail" if failed else "ok")
            else:  # a 429 or a final error says nothing about whether it is up
                self._send(model, 0, 0, "release")
            return
        if error is not None and not failed:
            return
        now = self.clock()
        with self._lock:
            if self._open_until.get(model, 0.0) > now:
                self._pending.pop(model, None)  # calls from before it opened: no news
                return
            successes = self._pending.get(model, 0) + (0 if failed else 1)
            if not failed and now - self._sent_at.get(model, 0.0) < SUCCESS_FLUSH_S:
                self._pending[model] = successes
                return
            self._pending[model] = 0
            self._sent_at[model] = now
        self._send(model, successes, int(failed), "")

    def release(self, model: str, admission: Admission) -> None:
        if admission.probe:
            self._send(model, 0, 0, "release")

    def _send(self, model: str, successes: int, failures: int, probe: str) -> None:
        state, ms, changed = self._record(
            keys=self._keys(model),
            args=[
                *self._common(model),
                successes,
                failures,
                probe,
                self.window,
                self.min_calls,
                self.failure_rate,
                self.cooldown_s,
                self.probes,
                self.forget_s,
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
                "circuit for %s open for %gs: at least %d%% of its last %d calls failed",
                model,
                ms / 1000,
                round(self.failure_rate * 100),
                self.window,
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
        now = time.monotonic()
        if self._clean_until.get(model, 0.0) > now:
            return GO
        failures, open_until = self.client.hmget(keys.breaker(model), ["failures", "open_until"])  # type: ignore[misc]
        if failures is None:
            self._clean_until[model] = now + self.clean_cache_s
            return GO
        if not open_until:
            return GO
        return Admission(wait_s=max(0.0, float(open_until) - time.time()))

    def record(self, model: str, admission: Admission, error: CourierError | None) -> None:
        if error is None:
            if self._clean_until.get(model, 0.0) <= time.monotonic():
                self.client.delete(keys.breaker(model))
        elif isinstance(error, RetryableError):
            self._clean_until.pop(model, None)
            until = time.time() + self.cooldown_s
            self._record_failure(keys=[keys.breaker(model)], args=[self.threshold, until])

    def release(self, model: str, admission: Admission) -> None:
        return None


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
            "breaker opens when COURIER_BREAKER_FAILURE_RATE of the last "
            "COURIER_BREAKER_WINDOW calls failed (COURIER_BREAKER=off: no breaker)"
        )
    return RateBreaker(
        client,
        failure_rate=settings.breaker_failure_rate,
        window=settings.breaker_window,
        min_calls=settings.breaker_min_calls,
        cooldown_s=settings.breaker_cooldown_s,
        probes=settings.breaker_probes,
        forget_s=settings.breaker_forget_s,
    )
