"""Provider SDK exceptions → the Courier error tree, and the headers that matter for rate.

Both official SDKs (``openai``, ``anthropic``) raise the same shapes, so one mapping serves both:

    SDK exception                                   Courier error
    ──────────────────────────────────────────────  ──────────────────────────────────
    APITimeoutError (before APIConnectionError)     ProviderTimeout
    APIConnectionError                              ProviderUnavailable
    APIStatusError 429                              RateLimited(retry_after)
    APIStatusError 5xx, 529                         ProviderUnavailable
    APIStatusError 408                              ProviderTimeout (retryable, on purpose)
    APIStatusError 401, 403                         AuthenticationFailed
    APIStatusError 400 code content_filter /
                   content_policy_violation         ContentFiltered
    APIStatusError any other 4xx                    InvalidRequest
    APIResponseValidationError, malformed body      ProviderUnavailable
    missing credentials                             AuthenticationFailed

Adapters catch only the SDK's exceptions and :data:`NON_SDK_ERRORS`: a Celery soft time limit
or a ``gevent.Timeout`` raised inside a call propagates untouched.

Every error keeps ``status_code`` and the rate-limit headers of the response. Messages are
redacted: the API key (and anything that looks like one) never appears in them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.errors import (
    AuthenticationFailed,
    ContentFiltered,
    CourierError,
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from core.logs import SECRET_SHAPES, secrets_from_env
from core.retry_after import parse_retry_after

log = logging.getLogger(__name__)

RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY_HEADERS = ("retry-after", "retry-after-ms")
CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
MAX_MESSAGE_CHARS = 500
# Besides the SDK's own exceptions, what a call may raise that is still the provider's doing: a
# missing key (the anthropic SDK raises TypeError at call time) or a malformed response body.
# Anything else (Celery's SoftTimeLimitExceeded, gevent.Timeout, ...) is left to propagate.
NON_SDK_ERRORS: tuple[type[Exception], ...] = (
    CourierError,
    TypeError,
    ValueError,
    KeyError,
    IndexError,
    AttributeError,
)

_KEY_LIKE = re.compile(r"\b(?:sk|pk|key|sess)-[A-Za-z0-9_\-*]{6,}")


def rate_limit_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The response headers that describe rate: ``x-ratelimit-*``, ``anthropic-ratelimit-*``,
    ``retry-after`` and ``retry-after-ms``; names lower-cased."""
    if not headers:
        return {}
    kept: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low.startswith(RATE_LIMIT_PREFIXES) or low in RETRY_HEADERS:
            kept[low] = value
    return kept


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given secrets, the process's own (webhook secrets, API keys:
    :func:`core.logs.secrets_from_env`) or anything shaped like a key, capped in length."""
    for secret in (*secrets, *secrets_from_env()):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = SECRET_SHAPES.sub("[redacted]", _KEY_LIKE.sub("[redacted]", text))
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _body_error(body: object) -> Mapping[str, Any]:
    """The ``error`` object of an error body (both providers nest it), or the body itself."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            return inner
        return body
    return {}


def _detail(exc: BaseException, body: object) -> str:
    """A human-readable reason: the provider's own ``error.message`` when it sent one."""
    message = _body_error(body).get("message")
    if isinstance(message, str) and message:
        return message
    if isinstance(body, str) and body:
        return body
    return str(getattr(exc, "message", None) or exc) or type(exc).__name__


def _is_missing_credentials(exc: BaseException) -> bool:
    text = str(exc).lower()
    return ("api_key" in text or "credentials" in text or "authentication method" in text) and (
        "must be set" in text or "missing" in text or "could not resolve" in text
    )


def map_sdk_error(
    exc: BaseException, *, provider: str, secrets: Iterable[str | None] = ()
) -> CourierError:
    """The Courier error for an exception raised by a provider SDK call (never raises)."""
    if isinstance(exc, CourierError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    headers = rate_limit_headers(getattr(response, "headers", None))
    body = getattr(exc, "body", None)
    detail = redact(_detail(exc, body), secrets)
    status_code = status if isinstance(status, int) else None

    if status_code is None or name == "APIResponseValidationError":
        # No HTTP error status: transport failures, timeouts, bad payloads, missing keys.
        if "Timeout" in name:
            return ProviderTimeout(f"{provider}: request timed out", rate_limit_headers=headers)
        if "Connection" in name:
            return ProviderUnavailable(f"{provider}: connection error: {detail}")
        if _is_missing_credentials(exc):
            return AuthenticationFailed(f"{provider}: no credentials: {detail}")
        log.warning("%s: unexpected %s mapped to provider_error: %s", provider, name, detail)
        return ProviderUnavailable(
            f"{provider}: unexpected {name}: {detail}",
            status_code=status_code,
            rate_limit_headers=headers,
        )

    message = f"{provider}: HTTP {status_code}: {detail}"
    kw: dict[str, Any] = {"status_code": status_code, "rate_limit_headers": headers}
    if status_code == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **kw)
    if status_code >= 500:
        return ProviderUnavailable(message, **kw)
    if status_code in (401, 403):
        return AuthenticationFailed(message, **kw)
    if status_code == 408:
        return ProviderTimeout(message, **kw)
    error = _body_error(body)
    codes = {getattr(exc, "code", None), error.get("code"), error.get("type")}
    if status_code == 400 and codes & CONTENT_FILTER_CODES:
        return ContentFiltered(message, **kw)
    return InvalidRequest(message, **kw)


def map_stream_error(
    exc: BaseException, provider: str, secrets: Iterable[str | None] = ()
) -> CourierError:
    """The Courier error for a fault while a stream is read: retryable, whatever it is.
    An error event inside a stream carries the 200 of the stream's response, which
    :func:`map_sdk_error` would take for a refused request; a body that does not parse
    (malformed JSON, a tool call's arguments) is the provider's fault, not the request's."""
    if "Timeout" in type(exc).__name__:
        return ProviderTimeout(f"{provider}: no stream chunk within the chunk timeout")
    if isinstance(exc, ValueError):
        return ProviderUnavailable(f"{provider}: malformed stream: {redact(str(exc), secrets)}")
    mapped = map_sdk_error(exc, provider=provider, secrets=secrets)
    if mapped.retryable:
        return mapped
    if mapped.status_code is not None and mapped.status_code < 300:
        detail = redact(_detail(exc, getattr(exc, "body", None)), secrets)
        return ProviderUnavailable(f"{provider}: error event in the stream: {detail}")
    return mapped
