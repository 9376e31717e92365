"""The benchmark's scenarios: one matrix cell of Courier or of the baseline, the bare SDK
call's CPU, and high-priority waits behind a low backlog.

Times come from the job records (``created_at``, ``started_at``, ``finished_at``), which
Courier (and the baseline task) stamp themselves; the bench's clock is used only for the
submit rate.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from bench import baseline
from bench.harness import (
    API_KEY,
    BASELINE_REDIS_URL,
    REDIS_URL,
    Sampler,
    Simulator,
    flush,
    percentile,
    read_times,
    start_baseline_worker,
    start_courier_worker,
    tree_cpu_s,
    wait_terminal,
)
from core import keys
from tests.support.procs import Proc

MODEL = "openai:gpt-4o-mini"
# Jobs per ``POST /v1/jobs/batch`` and requests in flight: the API's best rate here (see
# submit_probe; one job per POST tops out near 150/s per API process, a batch of 100 near 700).
SUBMIT_BATCH = 100
SUBMIT_CONCURRENCY = 4
WARMUP_JOBS = 5
# Worker log lines that point at a fault worth reporting.
SUSPECT = re.compile(r"Couldn't ack|MaxConnectionsError|Traceback|ERROR|CRITICAL")


@dataclass
class Cell:
    """One (system, latency, jobs) measurement, or why it was not run."""

    system: str
    latency: float
    jobs: int
    note: str = ""
    ran: bool = False
    finished: int = 0
    failed: int = 0
    submit_rate: float | None = None
    throughput: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    wait_p50: float | None = None
    peak_in_flight: int | None = None
    rss_idle: int | None = None
    rss_peak: int | None = None
    cpu_s: float | None = None
    wall_s: float = 0.0
    stop_s: float = 0.0
    suspect_lines: list[str] = field(default_factory=list)
    processes: int = 1  # worker processes; RSS and CPU are their sums

    @property
    def overhead(self) -> float | None:
        return None if self.p50 is None else self.p50 - self.latency

    @property
    def kb_per_in_flight(self) -> float | None:
        if not self.peak_in_flight or self.rss_idle is None or self.rss_peak is None:
            return None
        return (self.rss_peak - self.rss_idle) / 1024 / self.peak_in_flight

    @property
    def cpu_ms_per_job(self) -> float | None:
        if self.cpu_s is None or not self.finished:
            return None
        return self.cpu_s * 1000 / self.finished


def fill_from_records(cell: Cell, records: list[dict[str, str]]) -> None:
    ended = [r for r in records if r.get("finished_at")]
    cell.finished = len(ended)
    cell.failed = sum(1 for r in ended if r.get("status") != "succeeded")
    if not ended:
        return
    latencies = [float(r["finished_at"]) - float(r["created_at"]) for r in ended]
    first = min(float(r["created_at"]) for r in records)
    last = max(float(r["finished_at"]) for r in ended)
    cell.throughput = len(ended) / max(last - first, 1e-6)
    cell.p50, cell.p95, cell.p99 = (percentile(latencies, q) for q in (50, 95, 99))
    waits = [float(r["started_at"]) - float(r["created_at"]) for r in ended if r.get("started_at")]
    cell.wait_p50 = percentile(waits, 50) if waits else None


def cell_timeout(jobs: int, latency: float) -> float:
    """Generous: a cell slower than this is reported as stalled."""
    return 60 + 4 * latency + jobs / 15


# ---- submitting through the HTTP API ---------------------------------------------


def chat_body(prompt: str, priority: str = "normal") -> dict[str, Any]:
    return {
        "model": MODEL,
        "request": {"messages": [{"role": "user", "content": prompt}], "max_tokens": 50},
        "priority": priority,
    }


async def _submit_all(
    api_url: str,
    prompts: list[str],
    priority: str,
    concurrency: int,
    spread_s: float,
    batch: int,
) -> tuple[list[str], int]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    size = max(batch, 1)
    chunks = [list(range(i, min(i + size, len(prompts)))) for i in range(0, len(prompts), size)]
    ids: list[str | None] = [None] * len(prompts)
    errors = 0
    next_chunk = 0
    started = time.monotonic()

    async def post(client: httpx.AsyncClient, chunk: list[int]) -> list[str] | None:
        if batch:
            body = {"jobs": [chat_body(prompts[i], priority) for i in chunk]}
            response = await client.post("/v1/jobs/batch", json=body)
            return (
                [j["id"] for j in response.json()["jobs"]] if response.status_code == 202 else None
            )
        response = await client.post("/v1/jobs", json=chat_body(prompts[chunk[0]], priority))
        return [response.json()["id"]] if response.status_code == 202 else None

    async def one_worker(client: httpx.AsyncClient) -> None:
        nonlocal next_chunk, errors
        while next_chunk < len(chunks):
            chunk = chunks[next_chunk]
            next_chunk += 1
            if spread_s:
                due = started + spread_s * chunk[0] / len(prompts)
                await asyncio.sleep(due - time.monotonic())
            for _ in range(3):
                try:
                    got = await post(client, chunk)
                except httpx.TransportError:
                    continue
                if got is not None:
                    for index, job_id in zip(chunk, got, strict=True):
                        ids[index] = job_id
                    break
            else:
                errors += len(chunk)

    async with httpx.AsyncClient(
        base_url=api_url, headers=headers, limits=limits, timeout=60
    ) as client:
        await asyncio.gather(*(one_worker(client) for _ in range(min(concurrency, len(chunks)))))
    return [i for i in ids if i], errors


def submit_via_api(
    api_url: str,
    prompts: list[str],
    priority: str = "normal",
    concurrency: int = SUBMIT_CONCURRENCY,
    spread_s: float = 0.0,
    batch: int = 0,
) -> tuple[list[str], int, float]:
    """POST every prompt as a job (``batch`` > 0: that many per ``POST /v1/jobs/batch``);
    returns (job ids, failed submits, seconds taken)."""
    import uvloop

    started = time.perf_counter()
    ids, errors = uvloop.run(_submit_all(api_url, prompts, priority, concurrency, spread_s, batch))
    return ids, errors, time.perf_counter() - started


# ---- Courier --------------------------------------------------------------------


def stop_worker(worker: Proc) -> float:
    """SIGTERM, SIGKILL after 40 s; returns how long the worker took to exit."""
    started = time.monotonic()
    worker.stop(timeout=40)
    return time.monotonic() - started


def suspect_lines(proc: Proc) -> list[str]:
    text = proc.log_path.read_text(errors="replace")
    return [line[:300] for line in text.splitlines() if SUSPECT.search(line)][:50]


def warm_up(sim: Simulator, api_url: str, store: redis.Redis, latency: float) -> None:
    """A few jobs at 0 s so imports and the SDK client are built before measuring."""
    sim.set_latency(0)
    ids, _, _ = submit_via_api(api_url, [f"warm-up {i}" for i in range(WARMUP_JOBS)])
    wait_terminal(store, [keys.job(i) for i in ids], timeout=60, interval=0.1)
    sim.set_latency(latency)


# (jobs per request, 0 = one job per POST /v1/jobs; requests in flight) tried by the probe.
PROBE_SHAPES = ((0, 1), (0, 8), (0, 16), (100, 1), (100, 4), (100, 8))


def submit_probe(api: Proc, api_url: str, jobs: int) -> list[tuple[int, int, float, float]]:
    """The API alone (no worker): (batch, concurrency, submits/s, API CPU ms per job)."""
    flush(REDIS_URL)
    api_proc = psutil.Process(api.pid)
    submit_via_api(api_url, [f"probe warm-up {i}" for i in range(20)])
    out = []
    for batch, concurrency in PROBE_SHAPES:
        before = sum(api_proc.cpu_times()[:2])
        prompts = [f"probe {batch} {concurrency} {i}" for i in range(jobs * (10 if batch else 1))]
        ids, _, seconds = submit_via_api(api_url, prompts, concurrency=concurrency, batch=batch)
        cpu_ms = (sum(api_proc.cpu_times()[:2]) - before) * 1000 / max(len(ids), 1)
        out.append((batch, concurrency, len(ids) / seconds, cpu_ms))
    flush(REDIS_URL)
    return out


def run_courier_cell(
    sim: Simulator,
    api_url: str,
    latency: float,
    jobs: int,
    profile_out: str | None = None,
    concurrency: int = SUBMIT_CONCURRENCY,
    batch: int = SUBMIT_BATCH,
    processes: int = 1,
    env: dict[str, str] | None = None,
) -> Cell:
    """One matrix cell: ``processes`` ``courier worker`` processes (RSS and CPU summed);
    ``env`` overrides worker settings."""
    cell = Cell("courier", latency, jobs, ran=True, processes=processes)
    flush(REDIS_URL)
    store = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    workers = [start_courier_worker(sim, env=env) for _ in range(processes)]
    pids = [w.pid for w in workers]
    spy: Proc | None = None
    try:
        warm_up(sim, api_url, store, latency)
        time.sleep(1.0)
        cell.rss_idle = sum(psutil.Process(pid).memory_info().rss for pid in pids)
        cpu_before = sum(tree_cpu_s(pid) for pid in pids)
        if profile_out:
            spy = Proc(
                [str(Path(sys.executable).parent / "py-spy"), "record",
                 "--pid", str(pids[0]), "--gil", "-f", "raw",
                 "-r", "100", "-o", profile_out, "--nonblocking"],
                name="py-spy",
            )  # fmt: skip
            time.sleep(1.0)
        sampler = Sampler(pids)
        sampler.start()
        tag = uuid.uuid4().hex[:6]
        started = time.monotonic()
        prompts = [f"bench {tag} {latency} {i}" for i in range(jobs)]
        ids, errors, submit_s = submit_via_api(
            api_url, prompts, concurrency=concurrency, batch=batch
        )
        cell.submit_rate = len(ids) / submit_s
        record_keys = [keys.job(i) for i in ids]
        done, ended = wait_terminal(store, record_keys, cell_timeout(jobs, latency))
        cell.wall_s = time.monotonic() - started
        cell.cpu_s = sum(tree_cpu_s(pid) for pid in pids) - cpu_before
        samples = sampler.stop()
        cell.peak_in_flight, cell.rss_peak = samples.peak_in_flight, samples.peak_rss
        if spy is not None:
            spy.signal(2)  # SIGINT: py-spy writes its file and exits
            spy.popen.wait(30)
        fill_from_records(cell, read_times(store, record_keys))
        if errors:
            cell.note += f"{errors} submits refused; "
        if not done:
            cell.note += f"stalled: {ended} of {len(ids)} ended in {cell.wall_s:.0f} s; "
    finally:
        if spy is not None and spy.alive():
            spy.stop()
        cell.stop_s = max(stop_worker(w) for w in workers)
        cell.suspect_lines = [line for w in workers for line in suspect_lines(w)]
        store.close()
    return cell


# ---- the baseline -----------------------------------------------------------------


def baseline_estimate_s(jobs: int, latency: float, slots: int) -> float:
    """How long the baseline needs: its 2 slots each hold one call at a time."""
    return jobs * max(latency, 0.01) / slots


def run_baseline_cell(sim: Simulator, latency: float, jobs: int, slots: int) -> Cell:
    cell = Cell("baseline", latency, jobs, ran=True)
    flush(BASELINE_REDIS_URL)
    results = redis.Redis.from_url(BASELINE_REDIS_URL, decode_responses=True)
    sim.set_latency(0)
    worker = start_baseline_worker(sim, slots)
    try:
        warm = [f"warm-{uuid.uuid4().hex}" for _ in range(2 * slots)]
        for job_id in warm:
            baseline.submit(job_id, "warm-up")
        warm_keys = [baseline.RESULT_KEY.format(job_id=j) for j in warm]
        wait_terminal(results, warm_keys, timeout=60, interval=0.1)
        sim.set_latency(latency)
        time.sleep(0.5)
        cpu_before = tree_cpu_s(worker.pid)
        ids = [f"b-{uuid.uuid4().hex}" for _ in range(jobs)]
        started = time.perf_counter()
        for i, job_id in enumerate(ids):
            baseline.submit(job_id, f"bench {latency} {i}")
        cell.submit_rate = jobs / (time.perf_counter() - started)
        record_keys = [baseline.RESULT_KEY.format(job_id=j) for j in ids]
        timeout = 60 + 2 * baseline_estimate_s(jobs, latency, slots) + jobs / 10
        done, ended = wait_terminal(results, record_keys, timeout)
        cell.wall_s = time.perf_counter() - started
        cell.cpu_s = tree_cpu_s(worker.pid) - cpu_before
        fill_from_records(cell, read_times(results, record_keys))
        if not done:
            cell.note += f"stalled: {ended} of {jobs} ended in {cell.wall_s:.0f} s; "
    finally:
        cell.stop_s = stop_worker(worker)
        cell.suspect_lines = suspect_lines(worker)
        results.close()
    return cell
