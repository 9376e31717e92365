"""The rate limiter around the algorithms: limit keys, the settle rules, the token estimator,
provider header parsing, the state view and the worker-side builder."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from config.settings import ModelLimit
from core.errors import (
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from core.ratelimit.backends import MemoryBackend, RedisBackend
from core.ratelimit.estimate import DEFAULT_MAX_TOKENS, estimate_request
from core.ratelimit.feedback import cooldown_for, read_headers
from core.ratelimit.limiter import (
    ALGORITHMS,
    RateLimiter,
    Reservation,
    key_digest,
    match_pattern,
    settlement_for,
)
from core.ratelimit.model import Ask, Policy, Rule, Settlement, Verdict
from core.results import ProviderResult, Usage
from tests.support.ratelimit import Clock, ask, rule


class Refuses:
    """A backend that must not be called."""

    algorithm = ALGORITHMS["bucket"]
    policy = Policy()

    def reserve(self, rule: Rule, ask: Ask) -> Verdict:
        raise AssertionError("called")

    def settle(self, rule: Rule, settlement: Settlement) -> None:
        raise AssertionError("called")

    def snapshot(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        return []


def test_most_specific_pattern_wins() -> None:
    limits = {
        "openai:*": ModelLimit(rpm=1),
        "openai:gpt-4o*": ModelLimit(rpm=2),
        "openai:gpt-4o-mini": ModelLimit(rpm=3),
        "*": ModelLimit(rpm=4),
        "claude-*": ModelLimit(rpm=5),
    }
    assert match_pattern(limits, "openai:gpt-4o-mini") == "openai:gpt-4o-mini"
    assert match_pattern(limits, "openai:gpt-4o") == "openai:gpt-4o*"
    assert match_pattern(limits, "openai:o3") == "openai:*"
    assert match_pattern(limits, "anthropic:claude-haiku-4-5") == "claude-*"
    assert match_pattern(limits, "google:gemini") == "*"
    assert match_pattern({"openai:*": ModelLimit(rpm=1)}, "anthropic:x") is None


def test_key_is_pattern_plus_hashed_api_key() -> None:
    limiter = RateLimiter({"openai:*": ModelLimit(rpm=10)}, Refuses(), lambda p: f"sk-{p}")
    r = limiter.rule_for("openai:gpt-4o-mini")
    assert r is not None and r.name == f"openai:*|{key_digest('sk-openai')}"
    assert "sk-openai" not in r.name and len(key_digest("k")) == 12


def test_unlimited_model_never_reaches_the_backend() -> None:
    limiter = RateLimiter({"openai:*": ModelLimit(rpm=10)}, Refuses())
    reservation = limiter.reserve("anthropic:claude", {"messages": []}, "normal", "job1")
    assert reservation.granted and reservation.wait_s == 0
    limiter.settle(reservation, None, None)


def test_limiter_round_trip_on_memory(clock: Clock) -> None:
    backend = MemoryBackend(ALGORITHMS["bucket"], None, clock)
    limiter = RateLimiter({"openai:*": ModelLimit(rpm=2, tpm=10_000)}, backend, lambda p: "k")
    request = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 1000}
    first = limiter.reserve("openai:m", request, "normal", "j1")
    assert first.granted
    result = ProviderResult("openai:m", "stop", Usage(100, 20), 5)
    limiter.settle(first, result, None)
    (s,) = limiter.state()
    assert s["remaining_tokens"] == pytest.approx(10_000 - 120, abs=1)
    assert limiter.reserve("openai:m", request, "high", "j2").granted
    third = limiter.reserve("openai:m", request, "low", "j3")
    assert not third.granted and third.wait_s > 0 and third.reason == "requests"


def _reservation(input_tokens: int = 100, output_tokens: int = 1000) -> Reservation:
    from core.ratelimit.estimate import Estimate

    return Reservation(
        True, 0, "granted", rule(rpm=1), "rid", Estimate(input_tokens, output_tokens)
    )


@pytest.mark.parametrize(
    ("error", "requests", "tokens"),
    [
        (None, 1, 1100),  # never happened
        (ProviderUnavailable("connection error"), 1, 1100),
        (ProviderUnavailable("HTTP 503", status_code=503), 0, 1000),
        (ProviderTimeout("timed out"), 0, 0),
        (RateLimited("HTTP 429", status_code=429, retry_after=3), 0, 1100),
        (InvalidRequest("HTTP 400", status_code=400), 0, 1100),
    ],
)
def test_settle_rules_for_failed_calls(error: Any, requests: int, tokens: int) -> None:
    s = settlement_for(_reservation(), None, error)
    assert (s.give_requests, s.give_tokens) == (requests, tokens)
    assert (s.cooldown_s == 3) == isinstance(error, RateLimited)


def test_settle_to_true_usage_with_header_feedback() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-remaining-tokens": "900",
        "x-ratelimit-reset-requests": "6m0s",
    }
    result = ProviderResult("openai:m", "stop", Usage(90, 30), 5, rate_limit_headers=headers)
    s = settlement_for(_reservation(), result, None)
    assert s.give_tokens == 1100 - 120 and s.give_requests == 0
    assert (s.limit_requests, s.remaining_requests, s.remaining_tokens) == (60, 7, 900)


def test_estimate_chat_and_embedding() -> None:
    e = estimate_request({"messages": [{"role": "user", "content": "a" * 40}], "max_tokens": 50})
    assert (e.input_tokens, e.output_tokens) == (2 + 4 + 10, 50)
    e = estimate_request({"messages": [{"role": "user", "content": "hi"}], "system": "s" * 8})
    assert e.input_tokens == 2 + 4 + 1 + 4 + 2 and e.output_tokens == DEFAULT_MAX_TOKENS
    e = estimate_request({"input": ["a" * 8, "b" * 4]})
    assert (e.input_tokens, e.output_tokens) == (3, 0)
    parts = [{"type": "text", "text": "x" * 8}, {"type": "image_url", "image_url": {"url": "u"}}]
    assert estimate_request({"messages": [{"content": parts}], "max_tokens": 1}).input_tokens > 8


def test_openai_headers() -> None:
    f = read_headers(
        {
            "x-ratelimit-limit-tokens": "100000",
            "x-ratelimit-remaining-tokens": "99000",
            "x-ratelimit-reset-tokens": "250ms",
            "x-ratelimit-reset-requests": "1m30s",
        },
        now=0,
    )
    assert f.limit_tokens == 100000 and f.remaining_tokens == 99000
    assert f.reset_tokens_s == pytest.approx(0.25) and f.reset_requests_s == pytest.approx(90)
    assert f.remaining_requests is None


def test_anthropic_headers() -> None:
    now = 1_700_000_000.0
    f = read_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:50Z",
            "anthropic-ratelimit-input-tokens-remaining": "800",
            "anthropic-ratelimit-output-tokens-remaining": "300",
        },
        now=now,
    )
    assert (f.limit_requests, f.remaining_requests, f.remaining_tokens) == (50, 49, 300)
    assert f.reset_requests_s == pytest.approx(30.0)


def test_cooldown_hint() -> None:
    assert cooldown_for(RateLimited("429", retry_after=4.5), 0) == 4.5
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    assert cooldown_for(RateLimited("429", rate_limit_headers=headers), 0) == 2.0
    assert cooldown_for(RateLimited("429"), 0) == 1.0
    assert cooldown_for(ProviderUnavailable("503"), 0) is None


def test_limiter_state_on_redis_server_time(redis_client: redis.Redis) -> None:
    from core.ratelimit import limiter_state

    backend = RedisBackend(redis_client, ALGORITHMS["bucket"])  # Redis TIME, no test clock
    r = rule(rpm=100, tpm=1000, mif=3)
    assert backend.reserve(r, ask(tokens=100)).granted
    backend.settle(r, Settlement("nobody", cooldown_s=30))
    (s,) = [x for x in limiter_state(redis_client) if x["key"] == r.name]
    assert s["pattern"] == r.name.split("|")[0] and s["api_key"] == "abc"
    assert (s["rpm"], s["tpm"], s["max_in_flight"]) == (100, 1000, 3)
    assert s["remaining_requests"] < 100 and s["remaining_tokens"] < 1000
    assert s["in_flight"] == 1 and s["waiters"] == {"high": 0, "normal": 0, "low": 0}
    assert 29 < s["cooldown_s"] <= 30


def test_build_limiter_refills_with_a_margin(redis_client: redis.Redis) -> None:
    from types import SimpleNamespace

    from config.settings import Settings
    from core.ratelimit import build_limiter, limiter_state

    pattern = f"openai:margin-{uuid.uuid4().hex[:6]}"
    settings = Settings(limits={pattern: ModelLimit(rpm=60)})
    limiter = build_limiter(SimpleNamespace(settings=settings, redis=redis_client))
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    granted = [limiter.reserve(pattern, request, "normal", f"j{i}") for i in range(61)]
    assert [g.granted for g in granted].count(True) == 60
    assert 0.5 < granted[-1].wait_s <= 60 / 0.99 / 60 + 0.01  # 0.99 per second
    (s,) = [x for x in limiter_state(redis_client) if x["pattern"] == pattern]
    assert s["limit_requests"] == 60 and -1 < s["remaining_requests"] <= 1
