"""The fair order between tenants in a rate limit's waiting line, on every algorithm and
backend (the Lua and its Python twin): a tenant of long prompts gets the limit's tokens at its
weight, neither 10x (a line in arrival order) nor starved by short calls that always fit."""

from __future__ import annotations

import heapq
import itertools
import uuid

import pytest
import redis

from core.ratelimit.backends import MemoryBackend, RedisBackend
from core.ratelimit.limiter import ALGORITHMS
from core.ratelimit.model import Ask, Backend, Rule, Settlement
from tests.support.ratelimit import HIGH, NORMAL, Clock, Factory, rule


def run_line(
    backend: Backend,
    limit: Rule,
    clock: Clock,
    jobs: dict[str, tuple[int, float]],
    seconds: float,
    in_line: int = 20,
    priority: int = NORMAL,
) -> dict[str, int]:
    """Each tenant keeps ``in_line`` jobs of ``(tokens, weight)`` asking, each again when its
    wait is up (as the runner hands a refused job back); the tokens granted per tenant. The
    fair order counts from the start: what a tenant took in the first burst, while no one
    waited, it pays back later."""
    start = clock.now
    count = itertools.count()
    due: list[tuple[float, int, str, str]] = []
    for _ in range(in_line):  # interleaved: the first burst goes to both
        for tenant in jobs:
            heapq.heappush(due, (clock.now, next(count), tenant, uuid.uuid4().hex))
    granted = dict.fromkeys(jobs, 0)
    while due and due[0][0] < start + seconds:
        at, _, tenant, waiter = heapq.heappop(due)
        clock.now = max(clock.now, at)
        tokens, weight = jobs[tenant]
        rid = uuid.uuid4().hex
        verdict = backend.reserve(limit, Ask(tokens, priority, waiter, rid, tokens, tenant, weight))
        if verdict.granted:
            backend.settle(limit, Settlement(rid, latency_s=0.5, output_tokens=0))
            granted[tenant] += tokens
            waiter = uuid.uuid4().hex  # the tenant's next job joins the line
            heapq.heappush(due, (clock.now, next(count), tenant, waiter))
        else:
            heapq.heappush(due, (clock.now + verdict.wait_s, next(count), tenant, waiter))
    return granted


def test_long_prompts_get_an_equal_share_of_tokens(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(tpm=6000)  # 100 tokens a second
    got = run_line(b, r, clock, {"long": (1000, 1.0), "short": (100, 1.0)}, seconds=240)
    share = got["long"] / (got["long"] + got["short"])
    assert 0.35 <= share <= 0.65, got


def test_weights_share_the_tokens(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(tpm=6000)
    got = run_line(b, r, clock, {"heavy": (200, 3.0), "light": (200, 1.0)}, seconds=240)
    share = got["heavy"] / (got["heavy"] + got["light"])
    assert 0.65 <= share <= 0.85, got


def test_requests_are_shared_where_only_an_rpm_limit_applies(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(rpm=60)
    got = run_line(b, r, clock, {"a": (1000, 1.0), "b": (10, 1.0)}, seconds=240)
    calls = {"a": got["a"] / 1000, "b": got["b"] / 10}
    assert calls["a"] == pytest.approx(calls["b"], rel=0.25), calls


def test_one_tenant_alone_is_paced_as_before(make: Factory, clock: Clock) -> None:
    """With one tenant in the line the fair order changes nothing: the place in line holds."""
    b, r = make(None), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, Ask(0, NORMAL, uuid.uuid4().hex, uuid.uuid4().hex, None, "solo"))
    waits = [
        b.reserve(r, Ask(0, NORMAL, f"w{i}", uuid.uuid4().hex, None, "solo")).wait_s
        for i in range(5)
    ]
    assert waits == sorted(waits) and waits[-1] - waits[0] >= 3.9


def test_priority_comes_before_the_fair_order(make: Factory, clock: Clock) -> None:
    b, r = make(None), rule(rpm=60)
    for _ in range(60):
        b.reserve(r, Ask(0, NORMAL, uuid.uuid4().hex, uuid.uuid4().hex, None, "busy"))
    low_vt = b.reserve(r, Ask(0, NORMAL, "n", "rn", None, "idle"))
    high = b.reserve(r, Ask(0, HIGH, "h", "rh", None, "busy"))
    assert not low_vt.granted and not high.granted
    clock.advance(max(low_vt.wait_s, high.wait_s))
    assert b.reserve(r, Ask(0, HIGH, "h", "rh2", None, "busy")).granted


def test_the_lua_and_its_python_twin_agree(redis_url: str, algorithm: str) -> None:
    found = []
    for kind in ("memory", "redis"):
        clock = Clock()
        alg = ALGORITHMS[algorithm]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        backend: Backend = (
            MemoryBackend(alg, None, clock)
            if kind == "memory"
            else RedisBackend(client, alg, None, clock)
        )
        jobs = {"long": (1000, 1.0), "short": (100, 2.0), "mid": (400, 1.0)}
        found.append(run_line(backend, rule(tpm=6000), clock, jobs, seconds=120))
        client.close()
    assert found[0] == found[1]
