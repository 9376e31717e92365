"""RetryPolicy (workers.run.retry): exponential backoff with full jitter, capped, and never
sooner than the provider's Retry-After. Pure functions of a seeded random generator."""

from __future__ import annotations

import random
import statistics

import pytest

from workers.run.retry import RetryPolicy

POLICY = RetryPolicy(base_s=1.0, cap_s=60.0)


def samples(policy: RetryPolicy, failures: int, retry_after: float | None = None) -> list[float]:
    rng = random.Random(failures)
    return [policy.delay(failures, retry_after, rng) for _ in range(500)]


@pytest.mark.parametrize(
    ("failures", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (40, 60.0)]
)
def test_delays_stay_under_the_doubling_ceiling_and_the_cap(failures: int, ceiling: float) -> None:
    delays = samples(POLICY, failures)
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter: spread over the whole range, not bunched at the ceiling.
    assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
    assert statistics.mean(delays) == pytest.approx(ceiling / 2, rel=0.15)


def test_no_failure_yet_counts_as_the_first() -> None:
    assert all(d <= 1.0 for d in samples(POLICY, 0))


def test_the_base_scales_the_ceilings() -> None:
    policy = RetryPolicy(base_s=0.25, cap_s=1.0)
    assert all(d <= 0.5 for d in samples(policy, 2))
    assert all(d <= 1.0 for d in samples(policy, 5))


def test_retry_after_is_a_floor() -> None:
    assert set(samples(POLICY, 1, retry_after=5.0)) == {5.0}  # above the ceiling of 1 s
    assert all(d >= 2.5 for d in samples(POLICY, 4, retry_after=2.5))  # ceiling 8 s
    assert set(samples(POLICY, 30, retry_after=120.0)) == {120.0}  # honoured past the cap


@pytest.mark.parametrize("retry_after", [None, 0.0])
def test_no_retry_after_is_pure_jitter(retry_after: float | None) -> None:
    assert POLICY.delay(3, retry_after, random.Random(7)) == random.Random(7).uniform(0, 4.0)


def test_short_waits_are_slept_in_place_by_default() -> None:
    policy = RetryPolicy()
    assert (policy.base_s, policy.cap_s, policy.inline_max_s) == (1.0, 60.0, 3.0)
    # The first two backoffs never leave the worker slot; a retry-after of a minute always does.
    assert all(d <= policy.inline_max_s for f in (1, 2) for d in samples(policy, f))
    assert policy.delay(1, 60.0) > policy.inline_max_s
