"""Every algorithm on every backend (in-memory and real Redis, with an injected clock): buckets,
in-flight slots, settling, provider feedback, cool-downs, and the Lua held to its Python twin
(waiting lines: test_ratelimit_waiting.py; the limiter around them: test_ratelimit_parts.py)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import redis

from core.ratelimit.backends import MemoryBackend, RedisBackend
from core.ratelimit.limiter import ALGORITHMS
from core.ratelimit.model import Ask, Policy, Settlement
from tests.support.ratelimit import (
    HIGH,
    LOW,
    NORMAL,
    Clock,
    Factory,
    ask,
    rule,
    state,
    until_granted,
)


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


def test_remaining_counts_our_calls_sent_since_and_the_refill_since(make: Factory) -> None:
    b, r = make(None), rule(rpm=120)  # 2 a second
    first, *later = [ask() for _ in range(4)]
    for a in (first, *later):
        assert b.reserve(r, a).granted
    b.settle(r, Settlement(first.reservation, remaining_requests=10, latency_s=0.5))
    assert state(b, r.name)["remaining_requests"] == 10 - 3 + 1  # 3 sent since, 1 refilled
