"""High-priority jobs behind a low backlog: how long they wait for a worker slot.

``jobs.low`` is filled first (DirectProducer: store + enqueue, as the API does, but
faster), then one worker starts with the shipped defaults; once it is saturated, high
jobs arrive through the HTTP API, spread over a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from bench.harness import (
    REDIS_URL,
    Simulator,
    flush,
    percentile,
    read_times,
    start_courier_worker,
    wait_terminal,
)
from bench.scenarios import stop_worker, submit_via_api, suspect_lines
from core import keys
from tests.support.jobs import DirectProducer


@dataclass
class PriorityResult:
    backlog: int
    high_jobs: int
    latency: float
    fill_s: float
    in_flight_at_submit: int
    low_queued_at_submit: int
    wait_p50: float | None = None
    wait_p95: float | None = None
    wait_max: float | None = None
    e2e_p50: float | None = None
    run_p50: float | None = None
    overtaking_lows: int = 0
    high_ended: int = 0
    stop_s: float = 0.0
    in_flight_at_stop: int = 0
    note: str = ""
    suspect_lines: list[str] = field(default_factory=list)


def run_priority(
    sim: Simulator, api_url: str, backlog: int, high_jobs: int, spread_s: float, latency: float
) -> PriorityResult:
    """Fill ``jobs.low`` (DirectProducer: store + enqueue, as the API does), start a worker,
    wait until it is saturated, then submit high jobs through the API over ``spread_s``."""
    flush(REDIS_URL)
    sim.set_latency(latency)
    producer = DirectProducer(REDIS_URL)
    started = time.perf_counter()
    low_ids = [producer.submit(f"low {i}", priority="low", tenant="bench") for i in range(backlog)]
    fill_s = time.perf_counter() - started
    producer.close()
    store = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    worker = start_courier_worker(sim)
    try:
        # Saturated: in flight stops growing (the worker takes jobs only as fast as its CPU
        # allows) while the backlog still holds most of the low jobs.
        peak, steady_since, deadline = 0, time.monotonic(), time.monotonic() + 20
        while time.monotonic() < deadline and time.monotonic() - steady_since < 3:
            in_flight = int(store.zcard(keys.RUNNING))
            if in_flight > peak * 1.05:
                peak, steady_since = in_flight, time.monotonic()
            time.sleep(0.2)
        in_flight = int(store.zcard(keys.RUNNING))
        low_queued = int(store.zcard(keys.queued("low")))
        high_ids, errors, _ = submit_via_api(
            api_url, [f"high {i}" for i in range(high_jobs)], "high", 8, spread_s
        )
        high_keys = [keys.job(i) for i in high_ids]
        done, ended = wait_terminal(store, high_keys, timeout=120 + 4 * latency)
        result = PriorityResult(
            backlog, high_jobs, latency, fill_s, in_flight, low_queued, high_ended=ended
        )
        highs = read_times(store, high_keys)
        waits = [
            float(r["started_at"]) - float(r["created_at"]) for r in highs if r.get("started_at")
        ]
        if waits:
            result.wait_p50, result.wait_p95 = percentile(waits, 50), percentile(waits, 95)
            result.wait_max = max(waits)
        e2e = [
            float(r["finished_at"]) - float(r["created_at"]) for r in highs if r.get("finished_at")
        ]
        if e2e:
            result.e2e_p50 = percentile(e2e, 50)
            runs = [
                float(r["finished_at"]) - float(r["started_at"])
                for r in highs
                if r.get("finished_at")
            ]
            result.run_p50 = percentile(runs, 50)
        lows = read_times(store, [keys.job(i) for i in low_ids])
        low_starts = [float(r["started_at"]) for r in lows if r.get("started_at")]
        windows = [
            (float(r["created_at"]), float(r["started_at"])) for r in highs if r.get("started_at")
        ]
        result.overtaking_lows = sum(
            1 for s in low_starts if any(created < s < begun for created, begun in windows)
        )
        if errors:
            result.note += f"{errors} submits refused; "
        if not done:
            result.note += f"stalled: {ended} of {len(high_ids)} high jobs ended; "
        result.in_flight_at_stop = int(store.zcard(keys.RUNNING))
        result.stop_s = stop_worker(worker)
        result.suspect_lines = suspect_lines(worker)
        return result
    finally:
        if worker.alive():
            worker.stop(timeout=40)
        store.close()
        flush(REDIS_URL)
