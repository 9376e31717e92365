"""The pipeline's own overhead: one job at a time through the API on an idle system."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import redis

from bench.harness import (
    API_KEY,
    REDIS_URL,
    Simulator,
    flush,
    percentile,
    read_times,
    start_courier_worker,
)
from bench.scenarios import WARMUP_JOBS, chat_body, stop_worker
from core import keys


@dataclass
class IdleOverhead:
    """What the pipeline adds to a 0 s provider call when nothing else runs."""

    jobs: int
    wait_p50_ms: float  # created → started (API, Redis, the worker taking the message)
    run_p50_ms: float  # started → finished (claim, provider call, record)
    e2e_p50_ms: float
    e2e_p95_ms: float


def idle_overhead(sim: Simulator, api_url: str, jobs: int = 50) -> IdleOverhead:
    """``POST /v1/jobs`` one job at a time, each waited for (``?wait=``) before the next."""
    flush(REDIS_URL)
    sim.set_latency(0)
    store = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    worker = start_courier_worker(sim)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
            ids = []
            for i in range(jobs + WARMUP_JOBS):
                job = client.post("/v1/jobs", json=chat_body(f"idle {i}")).json()
                client.get(f"/v1/jobs/{job['id']}", params={"wait": 10})
                ids.append(job["id"])
                time.sleep(0.02)
        records = read_times(store, [keys.job(i) for i in ids[WARMUP_JOBS:]])
    finally:
        stop_worker(worker)
        store.close()
    waits = [(float(r["started_at"]) - float(r["created_at"])) * 1000 for r in records]
    runs = [(float(r["finished_at"]) - float(r["started_at"])) * 1000 for r in records]
    e2e = [(float(r["finished_at"]) - float(r["created_at"])) * 1000 for r in records]
    return IdleOverhead(
        len(records), percentile(waits, 50), percentile(runs, 50), percentile(e2e, 50),
        percentile(e2e, 95),
    )  # fmt: skip
