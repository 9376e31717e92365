"""Cluster-wide rate limits with real gevent workers and the provider simulator.

The simulator counts a true 60 s sliding window per API key, so a run that needs more than
one minute's budget takes at least a minute. To stay near two minutes, every scenario starts
at once (module fixture) and each test waits for its own jobs:

* pair 1 (two workers, simulator A at rpm 120 / tpm 12,000, latency 50 ms):
  ``openai:*`` rpm 120 (key ``sim-rpm``) and ``anthropic:*`` tpm 12,000 (key ``sim-tpm``);
* pair 2 (two workers, simulator B at rpm 60, its own Redis DB): ``openai:*`` rpm 120 — twice
  what B allows, to be discovered (key ``sim-disc``) — and ``anthropic:*`` rpm 30 for the
  priority scenario (key ``sim-prio``).

The arithmetic, for a token bucket of one minute's capacity refilled continuously:
150 jobs at rpm 120 → 120 at once; the bucket's refill then meets the simulator's full
window → one 429 (maybe two in flight) and a shared cool-down until the window slides
(~60 s); the other 30 then go at 2/s (~15 s): about 75 s in all.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from core.ratelimit import limiter_state
from tests.conftest import REDIS_HOST, REDIS_PORT, _claim_redis_db
from tests.support.jobs import DirectProducer
from tests.support.procs import Proc, free_port, python_module, wait_http, wait_until
from tests.support.simulator import SimulatorHandle
from tests.support.workers import flush_queues, start_worker

LATENCY = 0.05
TPM = 12_000
LONG_PROMPT_CHARS = 2000  # ~500 input tokens by the simulator's count
LARGE_MAX_TOKENS = 1000  # reserved, while the simulator answers 10-40 tokens


@dataclass
class Run:
    t0: float
    sim_a: SimulatorHandle
    sim_b: SimulatorHandle
    url_b: str
    p1: DirectProducer
    p2: DirectProducer
    ids: dict[str, list[str]] = field(default_factory=dict)


def _sim(name: str) -> tuple[Proc, SimulatorHandle]:
    port = free_port()
    proc = python_module("simulator", "--port", str(port), "--latency", "0", name=name)
    wait_http(f"http://127.0.0.1:{port}/_sim/health")
    return proc, SimulatorHandle(f"http://127.0.0.1:{port}")


def _pair(
    url: str, sim: SimulatorHandle, limits: dict[str, Any], keys: dict[str, str]
) -> list[Proc]:
    env = {"COURIER_LIMITS": json.dumps(limits), **keys}
    return [start_worker(url, sim, env=env, name=f"rl-{i}", wait=False) for i in range(2)]


def _ready(workers: list[Proc]) -> None:
    for proc in workers:
        try:
            wait_until(lambda p=proc: "ready." in p.output(), timeout=60)  # type: ignore[misc]
        except TimeoutError:
            raise RuntimeError(f"worker did not start:\n{proc.output()[-3000:]}") from None


@pytest.fixture(scope="module")
def run(redis_url: str, simulator: SimulatorHandle) -> Iterator[Run]:
    db_b = _claim_redis_db()
    url_b = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db_b}"
    flush_queues(redis_url)
    simulator.reset()
    simulator.configure(rpm=120, tpm=TPM, latency=LATENCY)
    sim_b_proc, sim_b = _sim("sim-b")
    sim_b.configure(rpm=60, latency=LATENCY)
    procs: list[Proc] = [sim_b_proc]
    p1, p2 = DirectProducer(redis_url), DirectProducer(url_b)
    try:
        procs += _pair(
            redis_url,
            simulator,
            {"openai:*": {"rpm": 120}, "anthropic:*": {"tpm": TPM}},
            {"OPENAI_API_KEY": "sim-rpm", "ANTHROPIC_API_KEY": "sim-tpm"},
        )
        procs += _pair(
            url_b,
            sim_b,
            {"openai:*": {"rpm": 120}, "anthropic:*": {"rpm": 30}},
            {"OPENAI_API_KEY": "sim-disc", "ANTHROPIC_API_KEY": "sim-prio"},
        )
        _ready(procs[1:])
        tag = uuid.uuid4().hex[:6]
        r = Run(time.time(), simulator, sim_b, url_b, p1, p2)
        long_text = ("lorem ipsum " * LONG_PROMPT_CHARS)[:LONG_PROMPT_CHARS]
        r.ids["rpm"] = [p1.submit(f"rpm-{tag}-{i}") for i in range(150)]
        r.ids["tpm"] = [
            p1.submit(
                f"tpm-{tag}-{i} {long_text}",
                "anthropic:claude-haiku-4-5",
                request={
                    "messages": [{"role": "user", "content": f"tpm-{tag}-{i} {long_text}"}],
                    "max_tokens": LARGE_MAX_TOKENS,
                },
            )
            for i in range(26)
        ]
        r.ids["discover"] = [p2.submit(f"disc-{tag}-{i}") for i in range(70)]
        prio = "anthropic:claude-haiku-4-5"
        r.ids["low"] = [p2.submit(f"low-{tag}-{i}", prio, priority="low") for i in range(45)]
        time.sleep(4)
        r.ids["high"] = [p2.submit(f"high-{tag}-{i}", prio, priority="high") for i in range(5)]
        yield r
    finally:
        for proc in procs:
            proc.signal(signal.SIGTERM)  # all at once: warm shutdowns overlap
        for proc in procs:
            proc.stop()
        p1.close()
        p2.close()
        client = redis.Redis.from_url(url_b)
        client.flushdb()
        client.close()
        simulator.reset()


def calls(sim: SimulatorHandle, key: str) -> list[dict[str, Any]]:
    return [c for c in sim.log() if c.get("key_suffix") == key[-4:]]


def max_in_window(times: list[float], span: float = 60.0) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_rpm_shared_by_two_workers(run: Run) -> None:
    jobs = run.p1.wait(run.ids["rpm"], timeout=170)
    assert {j["status"] for j in jobs} == {"succeeded"}
    log = calls(run.sim_a, "sim-rpm")
    ok = sorted(float(c["started"]) for c in log if c["status"] == 200)
    refused = [c for c in log if c["status"] == 429]
    assert len(ok) == 150
    assert len(refused) <= 2, [round(float(c["started"]) - ok[0], 2) for c in refused]
    elapsed = ok[-1] - ok[0]
    assert 59 <= elapsed <= 105, elapsed  # ~60 s for the window to slide + ~15 s for 30 at 2/s
    # The first minute's budget went at once: paced at 2/s from an empty bucket, 20 s would
    # hold ~40 calls. (Not "within 10 s": a loaded CI host once managed only 105 by then.)
    assert sum(t < ok[0] + 20 for t in ok) >= 110
    assert ok[-1] - ok[120] >= 10  # the last 30 were paced, not burst: 2/s → ~15 s


def test_tpm_with_large_max_tokens(run: Run) -> None:
    jobs = run.p1.wait(run.ids["tpm"], timeout=170)
    assert {j["status"] for j in jobs} == {"succeeded"}, [j["error"] for j in jobs]
    assert all(j["result"]["usage"]["output_tokens"] < 50 for j in jobs)
    log = calls(run.sim_a, "sim-tpm")
    ok = [c for c in log if c["status"] == 200]
    refused = [c for c in log if c["status"] == 429]
    assert len(ok) == 26 and len(refused) <= 2
    t_first = min(float(c["started"]) for c in ok)
    first_minute = sum(
        c["input_tokens"] + c["output_tokens"] for c in ok if float(c["started"]) < t_first + 60
    )
    # Reserving 1,000 output tokens per call did not starve the minute: refunds at settle.
    # Without them the bucket would pass 12,000 / ~1,520 = 7 calls (~3,700 tokens) in it;
    # ~22 calls go in the first 10 s (~11,700 tokens). Two CI runs saw ~7,950 tokens and
    # 126 s: jobs refused before any call had answered were lined up 7.6 s apart, at their
    # whole max_tokens (test_ratelimit_waiting: ..._a_queue_is_told_the_earliest_it_could_go).
    starts = sorted(round(float(c["started"]) - t_first, 1) for c in ok)
    assert first_minute >= 0.8 * TPM, (first_minute, starts, len(refused))
    elapsed = max(float(c["finished"]) for c in ok) - t_first
    assert elapsed <= 110, elapsed


def test_lower_provider_limit_is_discovered(run: Run) -> None:
    jobs = run.p2.wait(run.ids["discover"], timeout=170)
    assert {j["status"] for j in jobs} == {"succeeded"}
    log = calls(run.sim_b, "sim-disc")
    refused = sorted(float(c["started"]) for c in log if c["status"] == 429)
    ok = sorted(float(c["started"]) for c in log if c["status"] == 200)
    assert refused, "B's lower limit was never hit (the test did not test anything)"
    later = [t for t in refused if t > refused[0] + 1.0]
    assert len(refused) <= 6 and len(later) <= 2, [round(t - ok[0], 2) for t in refused]
    assert max_in_window(ok) <= 60
    client = redis.Redis.from_url(run.url_b, decode_responses=True)
    state = {s["pattern"]: s for s in limiter_state(client)}
    client.close()
    assert state["openai:*"]["rpm"] == 120
    assert state["openai:*"]["limit_requests"] == 60  # learned from the headers


def test_high_priority_overtakes_a_rate_limited_backlog(run: Run) -> None:
    high = run.p2.wait(run.ids["high"], timeout=170)
    low = run.p2.wait(run.ids["low"], timeout=170)
    assert {j["status"] for j in high + low} == {"succeeded"}
    finished = {j["id"]: j["finished_at"] for j in high + low}
    low_done = sorted(finished[i] for i in run.ids["low"])
    last_high = max(finished[i] for i in run.ids["high"])
    # 30 low went in the first burst; 15 waited (2 s each at rpm 30) when 5 high arrived.
    assert last_high < low_done[-8], "high jobs did not go ahead of the waiting low ones"
    waits = [j for j in low if j["status"] == "succeeded"]
    assert statistics.median(j["attempts"] for j in waits) == 1  # a refusal is not an attempt
