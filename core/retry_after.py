"""How long a server asks us to wait: ``Retry-After`` (and the providers' variants).

One reading of the header for both directions Courier talks HTTP: a provider's answer
(``retry-after-ms``, ``retry-after``, OpenAI's reset durations) and a webhook receiver's.
HTTP dates are GMT by definition (RFC 9110 §5.6.7), so a date without a zone counts as UTC.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """One ``Retry-After`` value (delta-seconds or an HTTP date) as seconds from now, else
    None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_duration(value: str) -> float | None:
    """OpenAI's reset durations (``"1s"``, ``"250ms"``, ``"6m0s"``, ``"1h2m3.5s"``) → seconds."""
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(num + unit for num, unit in parts) != text:
        return None
    return sum(float(num) * _DURATION_UNIT[unit] for num, unit in parts)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a provider asks us to wait, from ``retry-after-ms`` (milliseconds) or
    ``retry-after`` (seconds or an HTTP date); failing both, from the reset header of an
    exhausted OpenAI bucket. ``None`` if no hint. ``headers`` must have lower-case names."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    seconds = retry_after_seconds(headers.get("retry-after"), now)
    if seconds is not None:
        return seconds
    waits: list[float] = []
    for bucket in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{bucket}") == "0":
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{bucket}", ""))
            if reset is not None:
                waits.append(reset)
    return max(waits) if waits else None
