"""``RateLimiter``: the runner's :class:`~workers.run.runner.Limiter`, on a storage backend.

``reserve`` picks the limit key for ``provider:model`` (the most specific COURIER_LIMITS
pattern + the provider API key in use), estimates the tokens and asks the backend for 1
request + those tokens + 1 in-flight slot, all or nothing. ``settle`` gives back what the
provider did not count, charges or refunds the difference to the true ``usage``, frees the
slot and passes on what the provider's headers said (see :mod:`core.ratelimit`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from config.celery import PRIORITIES
from config.settings import ModelLimit
from core.credentials import env_api_key
from core.errors import CourierError, FinalError, ProviderTimeout, ProviderUnavailable
from core.ratelimit.backends.redis import RedisBackend, snapshot
from core.ratelimit.bucket import TokenBucket
from core.ratelimit.estimate import Estimate, estimate_request
from core.ratelimit.feedback import cooldown_for, read_headers
from core.ratelimit.model import Algorithm, Ask, Backend, Policy, Rule, Settlement
from core.ratelimit.window import SlidingWindow
from core.results import ProviderResult

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (TokenBucket(), SlidingWindow())}
WILDCARDS = frozenset("*?[")


@dataclass(slots=True)
class Reservation:
    """What ``reserve`` answers; the runner reads ``granted`` and ``wait_s``."""

    granted: bool
    wait_s: float = 0.0
    reason: str = "unlimited"
    rule: Rule | None = None
    id: str = ""
    estimate: Estimate | None = None
    started: float = 0.0  # time.monotonic() at the grant, for the latency average


def key_digest(api_key: str | None) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else "nokey"


def specificity(pattern: str) -> tuple[int, int, int, str]:
    """Sort key, most specific first: exact names, then more literal characters, then longer."""
    literal = sum(1 for c in pattern if c not in WILDCARDS)
    exact = 0 if WILDCARDS.isdisjoint(pattern) else 1
    return exact, -literal, -len(pattern), pattern


def match_pattern(limits: Mapping[str, object], model: str) -> str | None:
    """The most specific pattern matching ``provider:model`` (a pattern without ``:`` may also
    match the bare model name), or None."""
    _, _, bare = model.partition(":")
    hits = [
        p
        for p in limits
        if fnmatch.fnmatchcase(model, p) or (":" not in p and fnmatch.fnmatchcase(bare, p))
    ]
    return min(hits, key=specificity) if hits else None


class RateLimiter:
    def __init__(
        self,
        limits: Mapping[str, ModelLimit],
        backend: Backend,
        api_key: Callable[[str], str | None] = env_api_key,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.limits = dict(limits)
        self.backend = backend
        self.api_key = api_key
        self.weights = dict(weights or {})  # COURIER_TENANT_WEIGHTS: the line's fair order
        self._rules: dict[str, Rule | None] = {}

    def rule_for(self, model: str) -> Rule | None:
        """The limit key of ``provider:model``; None when no pattern limits it."""
        if model not in self._rules:
            pattern = match_pattern(self.limits, model)
            rule = None
            if pattern is not None:
                limit = self.limits[pattern]
                provider = model.partition(":")[0]
                rule = Rule(
                    f"{pattern}|{key_digest(self.api_key(provider))}",
                    limit.rpm or 0,
                    limit.tpm or 0,
                    limit.max_in_flight or 0,
                )
                if not (rule.rpm or rule.tpm or rule.max_in_flight):
                    rule = None
            self._rules[model] = rule
        return self._rules[model]

    def reserve(
        self,
        model: str,
        request: dict[str, Any],
        priority: str,
        job_id: str | None = None,
        tenant: str = "",
    ) -> Reservation:
        rule = self.rule_for(model)
        if rule is None:
            return Reservation(granted=True)
        estimate = estimate_request(request)
        rank = PRIORITIES.index(priority) if priority in PRIORITIES else 1
        reservation_id = uuid.uuid4().hex
        waiter = job_id or reservation_id
        weight = self.weights.get(tenant, 1.0)
        ask = Ask(
            estimate.total, rank, waiter, reservation_id, estimate.input_tokens, tenant, weight
        )
        verdict = self.backend.reserve(rule, ask)
        return Reservation(
            verdict.granted,
            verdict.wait_s,
            verdict.reason,
            rule,
            reservation_id,
            estimate,
            time.monotonic(),
        )

    def settle(
        self,
        reservation: Any,
        result: ProviderResult | None,
        error: CourierError | None,
    ) -> None:
        if not isinstance(reservation, Reservation) or not reservation.granted:
            return
        if reservation.rule is None or reservation.estimate is None:
            return
        self.backend.settle(reservation.rule, settlement_for(reservation, result, error))

    def state(self) -> list[dict[str, Any]]:
        return self.backend.snapshot()


def settlement_for(
    reservation: Reservation, result: ProviderResult | None, error: CourierError | None
) -> Settlement:
    """The settle rules (documented in :mod:`core.ratelimit`)."""
    estimate = reservation.estimate
    assert estimate is not None
    reserved = estimate.total
    give_requests, give_tokens = 0, 0.0
    used = 0
    if result is not None:
        used = result.usage.input_tokens + result.usage.output_tokens
        give_tokens = float(reserved - used) if used > 0 else 0.0
        headers = result.rate_limit_headers
    elif error is None:  # the call never happened
        give_requests, give_tokens = 1, float(reserved)
        headers = {}
    else:
        headers = error.rate_limit_headers
        if isinstance(error, ProviderTimeout):
            pass  # the provider may well have done all the work: keep everything
        elif isinstance(error, ProviderUnavailable) and error.status_code is None:
            give_requests, give_tokens = 1, float(reserved)  # never reached it
        elif isinstance(error, ProviderUnavailable):
            give_tokens = float(estimate.output_tokens)  # 5xx: it read the prompt
        elif isinstance(error, FinalError) or error.error_type == "rate_limited":
            give_tokens = float(reserved)  # refused before any work
        else:
            give_tokens = float(estimate.output_tokens)
    now = time.time()
    facts = read_headers(headers, now) if headers else None
    reached = result is not None or (error is not None and error.status_code is not None)
    return Settlement(
        reservation=reservation.id,
        give_requests=give_requests,
        give_tokens=give_tokens,
        remaining_requests=facts.remaining_requests if facts else None,
        remaining_tokens=facts.remaining_tokens if facts else None,
        limit_requests=facts.limit_requests if facts else None,
        limit_tokens=facts.limit_tokens if facts else None,
        cooldown_s=cooldown_for(error, now) if error is not None else None,
        latency_s=time.monotonic() - reservation.started if reached else None,
        output_tokens=result.usage.output_tokens if result is not None else None,
        call_tokens=float(used or estimate.input_tokens),
    )


def limiter_state(client: redis.Redis, policy: Policy | None = None) -> list[dict[str, Any]]:
    """Per limit key: limits (configured and learned), remaining requests/tokens, in-flight,
    waiters per priority and the cool-down left — for ``/metrics``."""
    return snapshot(client, ALGORITHMS, policy)


def build_limiter(runtime: Any) -> RateLimiter:
    """The cluster-wide limiter of a worker process (``tasks.base.build_limiter``)."""
    settings = runtime.settings
    policy = Policy(in_flight_ttl_s=settings.provider_timeout_s + 60.0)
    algorithm = TokenBucket(period=60.0 / policy.rate_margin)
    backend = RedisBackend(runtime.redis, algorithm, policy)
    return RateLimiter(settings.limits, backend, weights=settings.tenant_weights)
