"""The rate limiter's parts: every algorithm on every backend (in-memory and real Redis, with
an injected clock), the Lua held to its Python twin, estimator, header feedback, settle rules."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from config.settings import ModelLimit
from workers.errors import (
    InvalidRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from workers.providers.base import ProviderResult, Usage
from workers.ratelimit.backends import MemoryBackend, RedisBackend
from workers.ratelimit.estimate import DEFAULT_MAX_TOKENS, estimate_request
from workers.ratelimit.feedback import cooldown_for, read_headers
from workers.ratelimit.limiter import (
    ALGORITHMS,
    RateLimiter,
    Reservation,
    key_digest,
    match_pattern,
    settlement_for,
)
from workers.ratelimit.model import Ask, Backend, Policy, Rule, Settlement, Verdict

HIGH, NORMAL, LOW = 0, 1, 2


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[[Policy | None], Backend]


@pytest.fixture(params=sorted(ALGORITHMS))
def algorithm(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def make(algorithm: str, backend_kind: str, clock: Clock, redis_url: str) -> Iterator[Factory]:
    clients: list[redis.Redis] = []

    def factory(policy: Policy | None = None) -> Backend:
        alg = ALGORITHMS[algorithm]
        if backend_kind == "memory":
            return MemoryBackend(alg, policy, clock)
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        clients.append(client)
        return RedisBackend(client, alg, policy, clock)

    yield factory
    for c in clients:
        c.close()


def rule(rpm: int = 0, tpm: int = 0, mif: int = 0) -> Rule:
    return Rule(f"test-{uuid.uuid4().hex[:10]}|abc", rpm, tpm, mif)


def ask(tokens: int = 0, priority: int = NORMAL, waiter: str | None = None) -> Ask:
    rid = uuid.uuid4().hex
    return Ask(tokens, priority, waiter or rid, rid)


def state(backend: Backend, name: str) -> dict[str, Any]:
    (found,) = backend.snapshot([name])
    return found


def until_granted(backend: Backend, r: Rule, a: Ask, clock: Clock, limit: int = 50) -> float:
    """Follow the waits the limiter gives; the time it took."""
    start = clock.now
    for _ in range(limit):
        verdict = backend.reserve(r, a)
        if verdict.granted:
            return clock.now - start
        assert verdict.wait_s > 0
        clock.advance(verdict.wait_s)
    raise AssertionError("never granted")


# ---- every algorithm x every backend -------------------------------------------------


def test_burst_then_refused_then_refill(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(None), rule(rpm=60)
    assert all(b.reserve(r, ask()).granted for _ in range(60))
    refused = b.reserve(r, ask(waiter="late"))
    assert not refused.granted and refused.reason == "requests"
    assert 0 < refused.wait_s <= 120
    took = until_granted(b, r, ask(waiter="late"), clock)
    if algorithm == "bucket":
        assert took == pytest.approx(1.0, abs=0.01)  # 60/min refills one per second
    else:
        assert took <= 120


def test_tokens_all_or_nothing(make: Factory) -> None:
    b, r = make(None), rule(rpm=10, tpm=100)
    assert b.reserve(r, ask(tokens=60)).granted
    refused = b.reserve(r, ask(tokens=60))
    assert not refused.granted and refused.reason == "tokens"
    s = state(b, r.name)
    assert s["remaining_requests"] == 9  # the refused ask took nothing
    assert s["remaining_tokens"] == 40


def test_oversized_ask_is_granted_on_a_full_bucket(make: Factory) -> None:
    b, r = make(None), rule(tpm=100)
    assert b.reserve(r, ask(tokens=500)).granted
    assert state(b, r.name)["remaining_tokens"] < 0  # in debt


def test_in_flight_cap_and_release(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(mif=2)
    first, second = ask(), ask()
    assert b.reserve(r, first).granted and b.reserve(r, second).granted
    refused = b.reserve(r, ask(waiter="w"))
    assert not refused.granted and refused.reason == "in_flight"
    assert state(b, r.name)["in_flight"] == 2
    b.settle(r, Settlement(first.reservation))
    clock.advance(refused.wait_s)
    assert b.reserve(r, ask(waiter="w")).granted


def test_in_flight_slot_of_a_dead_worker_expires(make: Factory, clock: Clock) -> None:
    b, r = make(Policy(in_flight_ttl_s=10)), rule(mif=1)
    assert b.reserve(r, ask()).granted  # never settled: its worker died
    assert not b.reserve(r, ask()).granted
    clock.advance(10.5)
    assert b.reserve(r, ask()).granted


def test_settle_refunds_and_charges(make: Factory) -> None:
    b, r = make(None), rule(tpm=1000)
    a = ask(tokens=500)
    assert b.reserve(r, a).granted
    b.settle(r, Settlement(a.reservation, give_tokens=400))
    assert state(b, r.name)["remaining_tokens"] == pytest.approx(900, abs=1)
    c = ask(tokens=100)
    assert b.reserve(r, c).granted
    b.settle(r, Settlement(c.reservation, give_tokens=-300))
    assert state(b, r.name)["remaining_tokens"] == pytest.approx(500, abs=1)


def test_give_back_a_request_that_never_happened(make: Factory) -> None:
    b, r = make(None), rule(rpm=5)
    a = ask()
    assert b.reserve(r, a).granted
    b.settle(r, Settlement(a.reservation, give_requests=1))
    assert state(b, r.name)["remaining_requests"] == 5


def test_remaining_header_corrects_down_never_up(make: Factory) -> None:
    b, r = make(None), rule(rpm=100, tpm=10_000)
    a = ask(tokens=10)
    assert b.reserve(r, a).granted
    b.settle(r, Settlement(a.reservation, remaining_requests=30, remaining_tokens=5000))
    s = state(b, r.name)  # nobody waiting: exactly what the provider said
    assert s["remaining_requests"] == 30 and s["remaining_tokens"] == 5000
    b.settle(r, Settlement("x", remaining_requests=1000))
    assert state(b, r.name)["remaining_requests"] == 30
    b.reserve(r, ask(tokens=20_000, waiter="waits"))  # refused: now work waits
    b.settle(r, Settlement("y", remaining_requests=3, remaining_tokens=50))
    s = state(b, r.name)  # what normal work may use, plus the 10 % kept for high on top
    assert s["remaining_requests"] == 3 + 10 and s["remaining_tokens"] == 50 + 1000


def test_a_lower_limit_is_learned_not_a_higher_one(make: Factory) -> None:
    b, r = make(None), rule(rpm=100)
    for _ in range(10):
        assert b.reserve(r, ask()).granted
    b.settle(r, Settlement("x", limit_requests=50))
    s = state(b, r.name)
    assert s["limit_requests"] == 50 and s["rpm"] == 100
    assert s["remaining_requests"] == 40  # what was used stays used
    b.settle(r, Settlement("y", limit_requests=500))
    assert state(b, r.name)["limit_requests"] == 100  # never above the configured limit


def test_cooldown_pauses_every_reserve(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(rpm=600)
    a = ask()
    assert b.reserve(r, a).granted
    b.settle(r, Settlement(a.reservation, cooldown_s=2.0))
    assert state(b, r.name)["cooldown_s"] == pytest.approx(2.0)
    for priority in (HIGH, NORMAL, LOW):
        refused = b.reserve(r, ask(priority=priority, waiter=f"p{priority}"))
        assert not refused.granted and refused.reason == "cooldown"
        assert refused.wait_s >= 2.0
    clock.advance(2.01)
    for priority in (HIGH, NORMAL, LOW):  # one at a time: probing after the 429
        again = ask(priority=priority, waiter=f"p{priority}")
        assert until_granted(b, r, again, clock) < 61
        b.settle(r, Settlement(again.reservation))


def test_waits_follow_the_line(make: Factory, algorithm: str) -> None:
    b, r = make(None), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    waits = [b.reserve(r, ask(waiter=f"w{i}")).wait_s for i in range(5)]
    assert waits == sorted(waits) and waits[-1] > waits[0]
    if algorithm == "bucket":  # one per second, plus the 10 % kept for high once a line forms
        assert waits[2] - waits[1] == pytest.approx(1.0, abs=0.01)
        assert waits[1] - waits[0] == pytest.approx(1.0 + 6, abs=0.01)
    again = b.reserve(r, ask(waiter="w2")).wait_s
    assert again == pytest.approx(waits[2], abs=0.01)  # a waiter keeps its place


def test_high_goes_before_due_normal_and_low(make: Factory, clock: Clock) -> None:
    b, r = make(Policy(grace_s=30)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    low = b.reserve(r, ask(priority=LOW, waiter="low"))
    normal = b.reserve(r, ask(priority=NORMAL, waiter="normal"))
    high = b.reserve(r, ask(priority=HIGH, waiter="high"))
    assert not (low.granted or normal.granted or high.granted)
    assert high.wait_s <= normal.wait_s  # high's line is shorter
    clock.advance(max(low.wait_s, normal.wait_s, high.wait_s))
    blocked = b.reserve(r, ask(priority=LOW, waiter="low"))
    assert not blocked.granted and blocked.reason == "priority"
    assert not b.reserve(r, ask(priority=NORMAL, waiter="normal")).granted
    assert b.reserve(r, ask(priority=HIGH, waiter="high")).granted
    assert until_granted(b, r, ask(priority=NORMAL, waiter="normal"), clock) >= 0
    assert state(b, r.name)["waiters"] == {"high": 0, "normal": 0, "low": 1}


def test_share_kept_for_high_while_work_waits(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(Policy(grace_s=120)), rule(rpm=100)
    for _ in range(100):
        assert b.reserve(r, ask()).granted  # nobody waiting: the whole bucket is usable
    assert not b.reserve(r, ask(priority=LOW, waiter="queued-low")).granted  # now work waits
    clock.advance(30 if algorithm == "bucket" else 90)  # 50 back
    granted = sum(b.reserve(r, ask(priority=NORMAL)).granted for _ in range(60))
    assert granted == 40  # normal stopped at the 10 % kept for high
    assert state(b, r.name)["remaining_requests"] == 10
    assert b.reserve(r, ask(priority=HIGH)).granted


def test_stale_waiters_are_forgotten(make: Factory, clock: Clock) -> None:
    b, r = make(Policy(grace_s=5)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    gone = b.reserve(r, ask(priority=HIGH, waiter="cancelled-job"))
    clock.advance(gone.wait_s + 6)
    assert state(b, r.name)["waiters"]["high"] == 0
    assert b.reserve(r, ask(priority=LOW)).granted


# ---- the Lua and its Python twin agree -----------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_redis_matches_memory(algorithm: str, redis_url: str, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    alg = ALGORITHMS[algorithm]
    mem, red = MemoryBackend(alg, None, clock), RedisBackend(client, alg, None, clock)
    r = rule(rpm=30, tpm=3000, mif=5)
    granted: list[str] = []
    for step in range(300):
        clock.advance(rng.choice([0, 0, 0.05, 0.3, 1.5]))
        if granted and rng.random() < 0.4:
            s = Settlement(
                granted.pop(rng.randrange(len(granted))),
                give_requests=rng.choice([0, 0, 1]),
                give_tokens=rng.choice([0, 50, -30, 200]),
                remaining_requests=rng.choice([None, None, rng.randint(0, 30)]),
                remaining_tokens=rng.choice([None, None, rng.randint(0, 3000)]),
                limit_tokens=rng.choice([None, None, None, 2000, 5000]),
                cooldown_s=rng.choice([None] * 12 + [0.5]),
                latency_s=0.2,
                output_tokens=rng.choice([None, 10, 40]),
                call_tokens=rng.choice([None, 100.0]),
            )
            mem.settle(r, s)
            red.settle(r, s)
        else:
            tokens = rng.randint(1, 400)
            prompt = rng.choice([None, tokens // 4])
            a = Ask(tokens, rng.randint(0, 2), f"job{rng.randint(0, 15)}", f"r{step}", prompt)
            vm, vr = mem.reserve(r, a), red.reserve(r, a)
            assert vm.granted == vr.granted and vm.reason == vr.reason, step
            assert vm.wait_s == pytest.approx(vr.wait_s, rel=1e-6, abs=1e-6), step
            if vm.granted:
                granted.append(a.reservation)
        sm, sr = state(mem, r.name), state(red, r.name)
        assert sm == sr, step
    client.close()


# ---- the limiter: patterns, keys, unlimited models, settle rules ---------------------


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
    from workers.ratelimit.estimate import Estimate

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


# ---- estimator and header parsing -----------------------------------------------------


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
    from workers.ratelimit import limiter_state

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


def test_line_counts_net_tokens_once_outputs_are_known(make: Factory, algorithm: str) -> None:
    b, r = make(None), rule(tpm=6000)  # 100 tokens a second
    first = Ask(3000, NORMAL, "a", "ra", input_tokens=100)
    assert b.reserve(r, first).granted
    b.settle(r, Settlement("ra", give_tokens=2900 - 50, output_tokens=50))
    for i in range(2):
        b.reserve(r, Ask(3000, NORMAL, f"fill{i}", f"f{i}", input_tokens=100))
    waits = [b.reserve(r, Ask(3000, NORMAL, f"w{i}", f"w{i}", 100)).wait_s for i in range(4)]
    assert waits == sorted(waits)
    if algorithm == "bucket":  # each waiter ahead is expected to use 100 + 50, not 3000
        assert waits[3] - waits[2] == pytest.approx(1.5, abs=0.01)


def test_in_flight_is_capped_by_the_room_the_provider_reported(
    make: Factory, clock: Clock, algorithm: str
) -> None:
    b, r = make(Policy(grace_s=300)), rule(rpm=100)
    first, second = ask(), ask()
    assert b.reserve(r, first).granted and b.reserve(r, second).granted
    b.settle(r, Settlement(first.reservation, remaining_requests=0, latency_s=0.3))
    assert state(b, r.name)["room_in_flight"] == 1  # none left: one call at a time
    refused = b.reserve(r, ask(waiter="w", priority=HIGH))
    assert not refused.granted and refused.reason == "room" and refused.wait_s >= 0.3
    b.settle(r, Settlement(second.reservation, remaining_requests=40))
    assert state(b, r.name)["room_in_flight"] == 40
    clock.advance(5 if algorithm == "bucket" else 120)  # the bucket was corrected: it refills
    assert b.reserve(r, ask(waiter="w", priority=HIGH)).granted
    assert b.reserve(r, ask(priority=HIGH)).granted
    clock.advance(61 if algorithm == "bucket" else 130)
    assert state(b, r.name)["room_in_flight"] is None  # forgotten after a quiet minute


def test_after_a_cooldown_one_probe_goes_first(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(None), rule(rpm=600)
    early, late = ask(), ask()
    assert b.reserve(r, early).granted and b.reserve(r, late).granted
    clock.advance(0.1)
    b.settle(r, Settlement(early.reservation, cooldown_s=1.0))
    clock.advance(1.5 if algorithm == "bucket" else 60.5)  # a window held full slides out
    b.settle(r, Settlement(late.reservation, remaining_requests=500))  # granted before the 429
    assert state(b, r.name)["room_in_flight"] == 1
    probe = ask(priority=HIGH)
    assert b.reserve(r, probe).granted
    assert b.reserve(r, ask(priority=HIGH)).reason == "room"
    b.settle(r, Settlement(probe.reservation, remaining_requests=500))
    assert state(b, r.name)["room_in_flight"] == 500
    assert b.reserve(r, ask(priority=HIGH)).granted


@pytest.mark.parametrize(
    ("remaining_requests", "remaining_tokens", "room"),
    [(1, None, 1), (2, None, 2), (None, 99, 1), (None, 500, 5), (5, 50, 1)],
)
def test_room_in_calls_from_requests_and_tokens(
    make: Factory, remaining_requests: int | None, remaining_tokens: int | None, room: int
) -> None:
    b, r = make(None), rule(rpm=100, tpm=10_000)
    a = ask(tokens=100)
    assert b.reserve(r, a).granted
    s = Settlement(a.reservation, remaining_requests=remaining_requests, call_tokens=100.0)
    b.settle(r, replace(s, remaining_tokens=remaining_tokens))
    assert state(b, r.name)["room_in_flight"] == room


def test_build_limiter_refills_with_a_margin(redis_client: redis.Redis) -> None:
    from types import SimpleNamespace

    from config.settings import Settings
    from workers.ratelimit import build_limiter, limiter_state

    pattern = f"openai:margin-{uuid.uuid4().hex[:6]}"
    settings = Settings(limits={pattern: ModelLimit(rpm=60)})
    limiter = build_limiter(SimpleNamespace(settings=settings, redis=redis_client))
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    granted = [limiter.reserve(pattern, request, "normal", f"j{i}") for i in range(61)]
    assert [g.granted for g in granted].count(True) == 60
    assert 0.5 < granted[-1].wait_s <= 60 / 0.99 / 60 + 0.01  # 0.99 per second
    (s,) = [x for x in limiter_state(redis_client) if x["pattern"] == pattern]
    assert s["limit_requests"] == 60 and -1 < s["remaining_requests"] <= 1


def test_remaining_counts_our_calls_sent_since_and_the_refill_since(make: Factory) -> None:
    b, r = make(None), rule(rpm=120)  # 2 a second
    first, *later = [ask() for _ in range(4)]
    for a in (first, *later):
        assert b.reserve(r, a).granted
    b.settle(r, Settlement(first.reservation, remaining_requests=10, latency_s=0.5))
    assert state(b, r.name)["remaining_requests"] == 10 - 3 + 1  # 3 sent since, 1 refilled


def test_a_late_waiter_keeps_its_place(make: Factory, clock: Clock, algorithm: str) -> None:
    b, r = make(Policy(grace_s=5)), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, ask())
    first = b.reserve(r, ask(waiter="w0")).wait_s
    for i in range(1, 10):
        b.reserve(r, ask(waiter=f"w{i}"))
    clock.advance(first + 6)  # w0's job was held up elsewhere: it is late now
    b.settle(r, Settlement("x", cooldown_s=30))
    back = b.reserve(r, ask(waiter="w0"))  # refused (cool-down), but at the front
    newcomer = b.reserve(r, ask(waiter="new"))
    assert not back.granted and not newcomer.granted
    if algorithm == "bucket":  # nine live waiters ahead of the newcomer, none of w0
        assert newcomer.wait_s - back.wait_s >= 8
