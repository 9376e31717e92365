"""The circuit breakers' behaviour against the real Redis, with many threads recording at
once (each thread a worker process of its own, or all sharing one process's breaker)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from core import keys
from core.errors import CourierError, InvalidRequest, ProviderUnavailable, RateLimited
from core.metrics import BREAKER_TRANSITIONS, field
from workers.run.breaker import GO, Admission, CircuitBreaker, RateBreaker, StreakBreaker

THREADS = 16


def model() -> str:
    return f"openai:breaker-{uuid.uuid4().hex[:8]}"


def transitions(client: redis.Redis, name: str, state: str) -> int:
    return int(client.hget(keys.metrics(BREAKER_TRANSITIONS), field(name, state)) or 0)  # type: ignore[arg-type]


def mixed_outcomes(seed: int, n: int) -> list[CourierError | None]:
    """The issue's fault mix: 15 % 429, 10 % 500, 5 % 503, the rest answered."""
    rng = random.Random(seed)
    out: list[CourierError | None] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.15:
            out.append(RateLimited("429", retry_after=1))
        elif roll < 0.30:
            out.append(ProviderUnavailable("5xx"))
        else:
            out.append(None)
    return out


def in_threads(work: Callable[[int], object], n: int = THREADS) -> list[object]:
    barrier = threading.Barrier(n)

    def run(i: int) -> object:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def record_all(breaker: CircuitBreaker, name: str, outcomes: list[CourierError | None]) -> int:
    """Admit and record each outcome; returns how many calls the breaker refused."""
    refused = 0
    for error in outcomes:
        admission = breaker.admit(name)
        if admission.wait_s > 0:
            refused += 1
            continue
        breaker.record(name, admission, error)
    return refused


def test_random_faults_keep_the_rate_breaker_closed_but_open_the_streak_one(
    redis_client: redis.Redis,
) -> None:
    rate_model, streak_model = model(), model()
    # Each thread its own breaker, as each worker process has.
    refused = in_threads(
        lambda i: record_all(RateBreaker(redis_client), rate_model, mixed_outcomes(i, 400))
    )
    assert sum(refused) == 0  # type: ignore[arg-type]
    assert transitions(redis_client, rate_model, "open") == 0
    refused_by_streak = in_threads(
        lambda i: record_all(StreakBreaker(redis_client), streak_model, mixed_outcomes(i, 400))
    )
    # Five in a row at 30 % happen thousands of calls apart... and these were 6,400 calls.
    # (Its state at the end says nothing: a success admitted before it opened resets it.)
    assert sum(refused_by_streak) > 0  # type: ignore[arg-type]


def test_an_outage_opens_it_once_whatever_the_concurrency(redis_client: redis.Redis) -> None:
    name = model()
    shared = RateBreaker(redis_client, cooldown_s=30)

    def fail_20(i: int) -> int:
        breaker = shared if i % 2 else RateBreaker(redis_client, cooldown_s=30)
        return record_all(breaker, name, [ProviderUnavailable("down")] * 20)

    refused = in_threads(fail_20)
    assert transitions(redis_client, name, "open") == 1
    # Opened after min_calls (20) failures, plus what was already in flight then.
    assert sum(refused) >= THREADS * 20 - 20 - THREADS  # type: ignore[operator]
    admission = RateBreaker(redis_client).admit(name)
    assert 25 < admission.wait_s <= 30
    assert redis_client.hget(keys.BREAKERS, name) == "open"


def test_half_open_lets_exactly_the_probes_through(redis_client: redis.Redis) -> None:
    name = model()
    opener = RateBreaker(redis_client, cooldown_s=0.3, probes=3)
    record_all(opener, name, [ProviderUnavailable("down")] * 20)
    assert opener.admit(name).wait_s > 0
    time.sleep(0.35)
    breakers = [RateBreaker(redis_client, cooldown_s=0.3, probes=3) for _ in range(THREADS)]
    admissions: list[Admission] = in_threads(lambda i: breakers[i].admit(name))  # type: ignore[assignment]
    probes = [a for a in admissions if a.probe]
    assert len(probes) == 3
    assert all(a.wait_s > 0 for a in admissions if not a.probe)
    assert transitions(redis_client, name, "half_open") == 1
    # Two probes succeed: still half-open; the third closes it, with a fresh window.
    in_threads(lambda i: breakers[i].record(name, probes[i], None), n=2)
    assert redis_client.hget(keys.breaker(name), "state") == "half_open"
    breakers[0].record(name, probes[2], None)
    assert redis_client.exists(keys.breaker(name)) == 0
    assert redis_client.hget(keys.BREAKERS, name) is None
    assert transitions(redis_client, name, "closed") == 1
    assert RateBreaker(redis_client).admit(name) == GO


def test_a_failed_probe_opens_it_again(redis_client: redis.Redis) -> None:
    name = model()
    breaker = RateBreaker(redis_client, cooldown_s=0.2, probes=2)
    record_all(breaker, name, [ProviderUnavailable("down")] * 20)
    time.sleep(0.25)
    probe = breaker.admit(name)
    assert probe.probe
    breaker.record(name, probe, ProviderUnavailable("still down"))
    assert 0 < breaker.admit(name).wait_s <= 0.2
    assert transitions(redis_client, name, "open") == 2


def test_unanswered_probes_are_given_up_after_a_cooldown(redis_client: redis.Redis) -> None:
    name = model()
    breaker = RateBreaker(redis_client, cooldown_s=0.2, probes=1)
    record_all(breaker, name, [ProviderUnavailable("down")] * 20)
    time.sleep(0.25)
    assert breaker.admit(name).probe  # ... and its worker dies: no outcome ever comes
    assert not breaker.admit(name).probe
    time.sleep(0.25)
    assert breaker.admit(name).probe


def test_429s_and_final_errors_do_not_count(redis_client: redis.Redis) -> None:
    name = model()
    breaker = RateBreaker(redis_client)
    outcomes: list[CourierError | None] = [RateLimited("429"), InvalidRequest("400")] * 50
    assert record_all(breaker, name, outcomes) == 0
    assert transitions(redis_client, name, "open") == 0
    # A probe that meets a 429 gives its place back without closing the circuit.
    prober = RateBreaker(redis_client, cooldown_s=0.2, probes=1)
    record_all(prober, name, [ProviderUnavailable("x")] * 20)
    time.sleep(0.25)
    probe = prober.admit(name)
    assert probe.probe
    prober.record(name, probe, RateLimited("429"))
    assert redis_client.hget(keys.breaker(name), "state") == "half_open"
    assert prober.admit(name).probe


def test_a_burst_whose_errors_come_back_first_does_not_open_it(redis_client: redis.Redis) -> None:
    """Errors come back at once, answers after seconds: of 100 calls started together, the
    first 15 to end are all failures. Counted when they start, that is 15 %, not 100 %."""
    name = model()
    breaker = RateBreaker(redis_client, min_calls=10)
    admissions = [breaker.admit(name) for _ in range(100)]
    for admission in admissions[:15]:
        breaker.record(name, admission, ProviderUnavailable("fast 503"))
    for admission in admissions[15:]:
        breaker.record(name, admission, None)
    assert transitions(redis_client, name, "open") == 0


def test_calls_older_than_the_window_are_forgotten(redis_client: redis.Redis) -> None:
    name = model()
    breaker = RateBreaker(redis_client, window_s=0.5, min_calls=20)
    record_all(breaker, name, [ProviderUnavailable("x")] * 19)
    time.sleep(0.6)
    record_all(breaker, name, [ProviderUnavailable("x")])
    assert transitions(redis_client, name, "open") == 0  # 1 call in the window, not 20
    record_all(breaker, name, [ProviderUnavailable("x")] * 19)
    assert transitions(redis_client, name, "open") == 1


def test_metrics_show_open_circuits_and_transitions(redis_client: redis.Redis) -> None:
    from producers.api.collectors import ClusterCollector

    name = model()
    record_all(RateBreaker(redis_client, cooldown_s=30), name, [ProviderUnavailable("x")] * 20)
    metrics = {m.name: m for m in ClusterCollector(redis_client).collect()}
    open_now = [s for s in metrics["courier_breaker_open"].samples if s.labels["model"] == name]
    assert [(s.labels["state"], s.value) for s in open_now] == [("open", 1)]
    opened = [
        s
        for s in metrics["courier_breaker_transitions"].samples
        if s.labels == {"model": name, "state": "open"} and s.name.endswith("_total")
    ]
    assert [s.value for s in opened] == [1]
