"""Tenant quotas: a submission rate and a cap on unfinished jobs, both answered 429.

- **Rate** (``COURIER_TENANT_SUBMIT_RATE`` per second, bursts up to
  ``COURIER_TENANT_SUBMIT_BURST``): a token bucket per tenant in Redis
  (``courier:quota:<tenant>:rate``), one atomic Lua call per ``POST /v1/jobs`` on Redis's
  own clock, so every API process shares it. Over it: 429 ``rate_limited`` with
  ``Retry-After`` = when the next token is due.
- **Unfinished jobs** (``COURIER_TENANT_MAX_UNFINISHED``): the create script itself
  counts the tenant's queued and running jobs (``courier:quota:<tenant>:unfinished``, a
  zset the job enters when created and leaves when it ends) and refuses atomically, so
  concurrent submissions cannot overshoot and an idempotent replay, answered before the
  count, never counts twice. Over it: 429 ``quota_exceeded``.

Either way nothing is stored and nothing is queued.
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis

from core import keys, scripts
from core.errors import QuotaExceeded
from producers.api.deps import Services
from producers.api.errors import ApiError, ErrorBody

QUOTA_RETRY_AFTER_S = 5  # when to try again at the unfinished-jobs cap: jobs end at their pace

RESPONSES_429: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Over the tenant's submission rate (`rate_limited`) or its cap on "
        "unfinished jobs (`quota_exceeded`); `Retry-After` says when to try again",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    }
}


async def take_submit_token(
    client: aioredis.Redis, tenant: str, rate: float, burst: int, count: int = 1
) -> float:
    """Take ``count`` submission tokens from the tenant's bucket: 0 when taken, else the
    seconds until that many are due (nothing taken)."""
    allowed, wait = await client.eval(  # type: ignore[misc]
        scripts.SUBMIT_TOKENS, 1, keys.tenant_rate(tenant), repr(rate), burst, count
    )
    return 0.0 if int(allowed) else float(wait)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


async def charge_submissions(services: Services, tenant: str, count: int) -> None:
    """Take ``count`` submissions from the tenant's rate (a batch counts each of its jobs),
    or raise 429 ``rate_limited`` taking nothing."""
    settings = services.settings
    if settings.tenant_submit_rate <= 0:
        return
    rate, burst = settings.tenant_submit_rate, settings.tenant_submit_burst
    wait = await take_submit_token(services.aredis, tenant, rate, burst, count)
    if wait > 0:
        raise rate_error(tenant, rate, burst, wait)


def rate_error(tenant: str, rate: float, burst: int, wait: float) -> ApiError:
    """429 ``rate_limited``: the tenant's next submission token is ``wait`` seconds away."""
    return ApiError(
        429,
        f"tenant {tenant!r} is over its submission rate limit of "
        f"{rate:g}/s (burst {burst}); retry in {wait:.2f} s",
        "rate_limited",
        headers={"Retry-After": retry_after(wait)},
    )


def quota_error(tenant: str, exc: QuotaExceeded) -> ApiError:
    """429 ``quota_exceeded`` for a create refused at the unfinished-jobs cap."""
    return ApiError(
        429,
        f"tenant {tenant!r} has {exc.unfinished} unfinished jobs; the limit is {exc.limit} "
        "(COURIER_TENANT_MAX_UNFINISHED): wait for jobs to end",
        "quota_exceeded",
        headers={"Retry-After": str(QUOTA_RETRY_AFTER_S)},
    )


def max_unfinished(limit: int) -> int | None:
    """The create script's argument: None when there is no cap (0)."""
    return limit if limit > 0 else None
