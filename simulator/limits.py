"""Per-key RPM/TPM limits over a sliding window, and the headers that report them.

Each API key has a window of admitted requests ``(time, tokens)``. A request
is admitted when, after expiring entries older than the window, both
``requests + 1 <= rpm`` and ``tokens + cost <= tpm`` hold (a limit of 0 means
unlimited). Tokens are charged at admission: input tokens plus the output
tokens this reply will have.

A refusal carries ``retry_after``: the seconds until enough of the window
expires for the request to fit. A request whose cost alone exceeds ``tpm`` can
never fit; it is refused with ``retry_after`` = the window length.

The ``reset`` values in the headers follow the providers' documentation: the
time until the limit is fully replenished, i.e. until the newest entry of the
window expires.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

WINDOW_SECONDS = 60.0


@dataclass(slots=True, frozen=True)
class Snapshot:
    """The state of one key's window right after a decision."""

    rpm: int
    tpm: int
    remaining_requests: int
    remaining_tokens: int
    reset_seconds: float


@dataclass(slots=True, frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    reason: str = ""  # "requests" | "tokens" | "too_large" when refused
    snapshot: Snapshot | None = None  # None when both limits are unlimited


class _Window:
    __slots__ = ("events", "tokens")

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.tokens = 0

    def expire(self, now: float, span: float) -> None:
        events = self.events
        horizon = now - span
        while events and events[0][0] <= horizon:
            self.tokens -= events.popleft()[1]


class RateLimiter:
    """Sliding-window request and token counters, one window per API key."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._keys: dict[str, _Window] = {}

    def reset(self) -> None:
        self._keys.clear()

    def admit(self, key: str, cost: int, now: float, rpm: int, tpm: int) -> Decision:
        """Admit (and charge) one request of ``cost`` tokens at monotonic time ``now``."""
        if rpm <= 0 and tpm <= 0:
            return Decision(allowed=True)
        win = self._keys.get(key)
        if win is None:
            win = self._keys[key] = _Window()
        win.expire(now, self.window)
        wait_requests = self._wait_requests(win, now, rpm)
        wait_tokens = self._wait_tokens(win, now, cost, tpm)
        if wait_requests > 0 or wait_tokens > 0:
            if tpm > 0 and cost > tpm:
                reason = "too_large"
            else:
                reason = "requests" if wait_requests >= wait_tokens else "tokens"
            return Decision(
                allowed=False,
                retry_after=max(wait_requests, wait_tokens),
                reason=reason,
                snapshot=self._snapshot(win, now, rpm, tpm),
            )
        win.events.append((now, cost))
        win.tokens += cost
        return Decision(allowed=True, snapshot=self._snapshot(win, now, rpm, tpm))

    def peek(self, key: str, now: float, rpm: int, tpm: int) -> Snapshot | None:
        """The key's window state without charging anything (None when unlimited)."""
        if rpm <= 0 and tpm <= 0:
            return None
        win = self._keys.get(key) or _Window()
        win.expire(now, self.window)
        return self._snapshot(win, now, rpm, tpm)

    def _wait_requests(self, win: _Window, now: float, rpm: int) -> float:
        if rpm <= 0 or len(win.events) < rpm:
            return 0.0
        # The oldest len - rpm + 1 entries must expire to make room for one more.
        ts = win.events[len(win.events) - rpm][0]
        return max(ts + self.window - now, 0.001)

    def _wait_tokens(self, win: _Window, now: float, cost: int, tpm: int) -> float:
        if tpm <= 0 or win.tokens + cost <= tpm:
            return 0.0
        if cost > tpm:
            return self.window
        need = win.tokens + cost - tpm
        freed = 0
        for ts, tokens in win.events:
            freed += tokens
            if freed >= need:
                return max(ts + self.window - now, 0.001)
        return self.window  # unreachable: expiring everything frees win.tokens >= need

    def _snapshot(self, win: _Window, now: float, rpm: int, tpm: int) -> Snapshot:
        reset = win.events[-1][0] + self.window - now if win.events else 0.0
        return Snapshot(
            rpm=rpm,
            tpm=tpm,
            remaining_requests=max(rpm - len(win.events), 0),
            remaining_tokens=max(tpm - win.tokens, 0),
            reset_seconds=max(reset, 0.0),
        )


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: ``250ms``, ``1s``, ``8.64s``, ``6m0s``."""
    ms = math.ceil(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rfc3339(epoch: float) -> str:
    """Anthropic's reset format: an RFC 3339 UTC timestamp, whole seconds rounded up."""
    return datetime.fromtimestamp(math.ceil(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_headers(retry_after: float) -> dict[str, str]:
    """``retry-after`` (integer seconds, rounded up) and ``retry-after-ms``."""
    return {
        "retry-after": str(max(1, math.ceil(retry_after))),
        "retry-after-ms": str(max(1, math.ceil(retry_after * 1000))),
    }


def openai_headers(snap: Snapshot | None) -> dict[str, str]:
    """``x-ratelimit-*`` headers; a limit of 0 (unlimited) is left out."""
    if snap is None:
        return {}
    out: dict[str, str] = {}
    reset = go_duration(snap.reset_seconds)
    if snap.rpm > 0:
        out["x-ratelimit-limit-requests"] = str(snap.rpm)
        out["x-ratelimit-remaining-requests"] = str(snap.remaining_requests)
        out["x-ratelimit-reset-requests"] = reset
    if snap.tpm > 0:
        out["x-ratelimit-limit-tokens"] = str(snap.tpm)
        out["x-ratelimit-remaining-tokens"] = str(snap.remaining_tokens)
        out["x-ratelimit-reset-tokens"] = reset
    return out


def anthropic_headers(snap: Snapshot | None, wall_now: float) -> dict[str, str]:
    """``anthropic-ratelimit-*`` headers; the simulator has one token limit, so the
    ``tokens``, ``input-tokens`` and ``output-tokens`` families report the same values."""
    if snap is None:
        return {}
    out: dict[str, str] = {}
    reset = rfc3339(wall_now + snap.reset_seconds)
    if snap.rpm > 0:
        out["anthropic-ratelimit-requests-limit"] = str(snap.rpm)
        out["anthropic-ratelimit-requests-remaining"] = str(snap.remaining_requests)
        out["anthropic-ratelimit-requests-reset"] = reset
    if snap.tpm > 0:
        for family in ("tokens", "input-tokens", "output-tokens"):
            out[f"anthropic-ratelimit-{family}-limit"] = str(snap.tpm)
            out[f"anthropic-ratelimit-{family}-remaining"] = str(snap.remaining_tokens)
            out[f"anthropic-ratelimit-{family}-reset"] = reset
    return out
