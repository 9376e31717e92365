"""Courier's error tree, organised by what the caller should do next.

    CourierError
    ├── RetryableError             try again later (same model, or a fallback)
    │   ├── RateLimited            429 / overloaded quota; carries ``retry_after``
    │   ├── ProviderUnavailable    5xx, 529, connection refused or reset
    │   └── ProviderTimeout        the call took longer than its timeout
    └── FinalError                 the same request will never succeed
        ├── InvalidRequest         400, 404, 409, 413, 422: the request itself is wrong
        ├── AuthenticationFailed   401, 403: the provider key is missing or refused
        ├── ContentFiltered        the provider refused the content
        └── BudgetExceeded         the call's worst-case cost does not fit the tenant's budget

Outside the provider call, refusals the caller handles, each where it is raised:

    QuotaExceeded              the tenant has as many unfinished jobs as it may (API: 429)
    UnsafeCallbackURL          a callback URL Courier will not call (API: 422)
    └── CallbackHostUnresolved the host does not resolve now (at delivery: retried)
    RedeliverError             the callback cannot be redelivered (API: 404/409)
    NotClaimed                 the store was unreachable before a claim (the message goes back)

A provider error may carry the ``usage`` of an answer that was billed all the same (an answer
Courier could not use): its cost is counted. Each provider error class has an
``error_type``: the string stored in the job record (``error.type`` of the job,
docs/contract.md, The job). Celery's serializers do not carry
custom exception classes faithfully, so only that string and the message cross process lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.results import Usage


class CourierError(Exception):
    """Base of every error Courier raises about a provider call."""

    error_type = "provider_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        rate_limit_headers: Mapping[str, str] | None = None,
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.rate_limit_headers: dict[str, str] = dict(rate_limit_headers or {})
        self.usage = usage

    def to_record(self) -> dict[str, object]:
        """The ``error`` object of the job record."""
        return {"type": self.error_type, "message": self.message, "retryable": self.retryable}


class RetryableError(CourierError):
    """A transient fault: the same request may succeed later."""

    retryable = True


class RateLimited(RetryableError):
    """The provider refused the call for rate; ``retry_after`` seconds is its hint, if any."""

    error_type = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderUnavailable(RetryableError):
    """The provider failed or could not be reached (5xx, 529, connection error)."""

    error_type = "provider_error"


class ProviderTimeout(RetryableError):
    """The call did not finish within its timeout."""

    error_type = "timeout"


class FinalError(CourierError):
    """A permanent fault: retrying the same request cannot help."""


class InvalidRequest(FinalError):
    """The provider rejected the request as malformed or unknown (400/404/422)."""

    error_type = "invalid_request"


class AuthenticationFailed(FinalError):
    """The provider refused the credentials (401/403)."""

    error_type = "authentication"


class ContentFiltered(FinalError):
    """The provider refused to answer for content reasons."""

    error_type = "content_filter"


class BudgetExceeded(FinalError):
    """The call's worst-case cost does not fit what is left of the tenant's budget (or its
    model has no price); never retried (docs/contract.md, Cost, budgets and cache)."""

    error_type = "budget_exceeded"


# ---- refusals outside the provider call -------------------------------------------------


class QuotaExceeded(Exception):
    """The tenant has as many unfinished jobs as it may; nothing was stored."""

    def __init__(self, unfinished: int, limit: int) -> None:
        super().__init__(f"{unfinished} unfinished jobs; the limit is {limit}")
        self.unfinished = unfinished
        self.limit = limit


class UnsafeCallbackURL(ValueError):
    """A callback URL Courier refuses to call (bad form, credentials, or a non-public host)."""


class CallbackHostUnresolved(UnsafeCallbackURL):
    """The callback host does not resolve (now); at delivery this is retried."""


class RedeliverError(ValueError):
    """The callback cannot be redelivered; ``reason`` is not_found, no_callback or not_ended."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotClaimed(Exception):
    """The job could not even be claimed (the store is unreachable): the message must be
    given back, not acknowledged, or the still-queued job would have no message left."""
