"""Rate-limiter test helpers: an injected clock, every algorithm on every backend (in-memory
and real Redis), and short ways to build rules and asks.

Registered as a plugin by ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from core.ratelimit.backends import MemoryBackend, RedisBackend
from core.ratelimit.limiter import ALGORITHMS
from core.ratelimit.model import Ask, Backend, Policy, Rule

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
