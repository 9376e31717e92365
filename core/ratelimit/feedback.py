"""Provider rate-limit headers and 429s → corrections to the shared budgets.

Read from every answer (success or error) that carries them:

=================================================  ==========================================
OpenAI                                             Anthropic
=================================================  ==========================================
``x-ratelimit-limit-requests|tokens``              ``anthropic-ratelimit-requests|tokens-limit``
``x-ratelimit-remaining-requests|tokens``          ``…-remaining``
``x-ratelimit-reset-requests|tokens`` (``6m0s``)   ``…-reset`` (RFC 3339)
=================================================  ==========================================

(For Anthropic tokens, the ``tokens`` family when sent, else the tighter of ``input-tokens``
and ``output-tokens``.) What the limiter does with them:

* **limit** below the configured one: learned as the key's limit (for
  :attr:`~core.ratelimit.model.Policy.learn_ttl_s`, refreshed by each answer); the units
  already used stay used. A limit at or above the configured one forgets what was learned:
  the configured limit is never exceeded.
* **remaining**: the provider's room now is ``remaining - (our calls sent since) * (units a
  call) + limit/60 * (the call's latency)`` (the count was taken when the call arrived). The
  shared budget normal work may use is lowered to it, never raised. Calls in flight are capped
  at ``remaining`` counted in calls (at least 1; no refill assumed, as the provider may count a
  sliding window) until a newer answer or a quiet minute: what the bucket believes but the
  provider has not confirmed never goes out as a batch.
* **reset**: kept for the state view; on a 429 without ``Retry-After`` it is the wait hint
  (:func:`core.retry_after.parse_retry_after` falls back to it).
* **429**: a shared cool-down until ``Retry-After`` (else :data:`DEFAULT_COOLDOWN_S`); every
  worker's reserve refuses until then, the budgets restart from the ``high`` share when it
  ends, and one call goes at a time until an answer to a call made after the 429 shows room
  (a provider that just said "full" is not sent a burst).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from core.errors import CourierError, RateLimited
from core.retry_after import parse_duration, parse_retry_after

DEFAULT_COOLDOWN_S = 1.0


@dataclass(frozen=True, slots=True)
class Feedback:
    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    cooldown_s: float | None = None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None


def _rfc3339_in(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, when.timestamp() - now)


def _min(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _openai(h: Mapping[str, str]) -> Feedback:
    def reset(name: str) -> float | None:
        raw = h.get(f"x-ratelimit-reset-{name}")
        return None if raw is None else parse_duration(raw)

    return Feedback(
        limit_requests=_int(h.get("x-ratelimit-limit-requests")),
        limit_tokens=_int(h.get("x-ratelimit-limit-tokens")),
        remaining_requests=_int(h.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(h.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=reset("requests"),
        reset_tokens_s=reset("tokens"),
    )


def _anthropic(h: Mapping[str, str], now: float) -> Feedback:
    def get(family: str, field: str) -> str | None:
        return h.get(f"anthropic-ratelimit-{family}-{field}")

    def tokens(field: str) -> int | None:
        whole = _int(get("tokens", field))
        if whole is not None:
            return whole
        return _min(_int(get("input-tokens", field)), _int(get("output-tokens", field)))

    reset_tokens = _rfc3339_in(get("tokens", "reset"), now)
    if reset_tokens is None:
        resets = [_rfc3339_in(get(f, "reset"), now) for f in ("input-tokens", "output-tokens")]
        reset_tokens = max((r for r in resets if r is not None), default=None)
    return Feedback(
        limit_requests=_int(get("requests", "limit")),
        limit_tokens=tokens("limit"),
        remaining_requests=_int(get("requests", "remaining")),
        remaining_tokens=tokens("remaining"),
        reset_requests_s=_rfc3339_in(get("requests", "reset"), now),
        reset_tokens_s=reset_tokens,
    )


def read_headers(headers: Mapping[str, str], now: float) -> Feedback:
    """The rate facts in a response's headers (names lower-cased, as the adapters keep them)."""
    if any(name.startswith("anthropic-ratelimit-") for name in headers):
        return _anthropic(headers, now)
    return _openai(headers)


def cooldown_for(error: CourierError, now: float) -> float | None:
    """Seconds every worker should pause after ``error`` (only a 429 asks for a pause)."""
    if not isinstance(error, RateLimited):
        return None
    if error.retry_after is not None:
        return max(error.retry_after, 0.0) or DEFAULT_COOLDOWN_S
    hint = parse_retry_after(error.rate_limit_headers, now=now)
    return hint if hint else DEFAULT_COOLDOWN_S
