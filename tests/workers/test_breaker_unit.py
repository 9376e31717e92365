"""The streak breaker (``StreakBreaker``, ``COURIER_BREAKER=streak``; workers.run.breaker) on
the real Redis (the rate breaker's tests: tests/test_breaker.py): closed until ``threshold``
consecutive failures, then open for ``cooldown_s``; after the cool-down a call goes through,
a success closes it and a failure opens it again at once. Every worker shares the state."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from core import keys
from workers.run.breaker import StreakBreaker


@pytest.fixture()
def model() -> str:
    """A model of its own per test: circuit state in Redis outlives a test."""
    return f"openai:breaker-{uuid.uuid4().hex[:8]}"


def cool_down_over(client: redis.Redis, model: str) -> None:
    """As if ``cooldown_s`` had passed."""
    client.hset(keys.breaker(model), "open_until", str(time.time() - 1))


def test_closed_until_the_threshold_then_open_for_the_cool_down(
    redis_client: redis.Redis, model: str
) -> None:
    breaker = StreakBreaker(redis_client, threshold=3, cooldown_s=30)
    assert breaker.open_for(model) == 0
    assert [breaker.record_failure(model) for _ in range(3)] == [False, False, True]
    assert 29 < breaker.open_for(model) <= 30
    assert 0 < redis_client.ttl(keys.breaker(model)) <= 3600  # a forgotten circuit is dropped


def test_a_success_closes_it_and_starts_the_count_again(
    redis_client: redis.Redis, model: str
) -> None:
    breaker = StreakBreaker(redis_client, threshold=2, cooldown_s=30)
    breaker.record_failure(model)
    breaker.record_failure(model)
    assert breaker.open_for(model) > 0
    breaker.record_success(model)
    assert breaker.open_for(model) == 0
    assert not redis_client.exists(keys.breaker(model))
    assert breaker.record_failure(model) is False  # one failure of two again


def test_failures_apart_from_each_other_by_a_success_never_open_it(
    redis_client: redis.Redis, model: str
) -> None:
    breaker = StreakBreaker(redis_client, threshold=2, cooldown_s=30)
    for _ in range(5):
        assert breaker.record_failure(model) is False
        breaker.record_success(model)
    assert breaker.open_for(model) == 0


def test_after_the_cool_down_a_call_goes_through_and_one_failure_reopens_it(
    redis_client: redis.Redis, model: str
) -> None:
    breaker = StreakBreaker(redis_client, threshold=3, cooldown_s=30)
    for _ in range(3):
        breaker.record_failure(model)
    cool_down_over(redis_client, model)
    assert breaker.open_for(model) == 0  # half-open: the next call is let through
    assert breaker.record_failure(model) is True  # it failed: open again, no new count of 3
    assert 29 < breaker.open_for(model) <= 30


def test_after_the_cool_down_a_success_closes_it(redis_client: redis.Redis, model: str) -> None:
    breaker = StreakBreaker(redis_client, threshold=1, cooldown_s=30)
    breaker.record_failure(model)
    cool_down_over(redis_client, model)
    breaker.record_success(model)
    assert breaker.record_failure(model) is True  # threshold 1: counted from zero again
    breaker.record_success(model)
    assert breaker.open_for(model) == 0


def test_every_worker_sees_the_same_circuit(redis_client: redis.Redis, model: str) -> None:
    one = StreakBreaker(redis_client, threshold=2, cooldown_s=30, clean_cache_s=0)
    other = StreakBreaker(redis_client, threshold=2, cooldown_s=30, clean_cache_s=0)
    one.record_failure(model)
    assert other.record_failure(model) is True  # the second failure cluster-wide opens it
    assert one.open_for(model) > 0
    other.record_success(model)
    assert one.open_for(model) == 0


def test_a_model_seen_clean_is_not_asked_about_again_for_a_moment(
    redis_client: redis.Redis, model: str
) -> None:
    cached = StreakBreaker(redis_client, threshold=1, cooldown_s=30, clean_cache_s=60)
    assert cached.open_for(model) == 0  # no failures at all: taken as closed for 60 s
    StreakBreaker(redis_client, threshold=1, cooldown_s=30).record_failure(model)
    assert cached.open_for(model) == 0  # opened by another worker, not asked yet
    cached.record_failure(model)  # its own failure drops what it took for granted
    assert cached.open_for(model) > 0
