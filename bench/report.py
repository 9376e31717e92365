"""The benchmark's report: the markdown tables of ``bench/results.md`` (plot: bench.plot)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import redis

from bench.bare import CpuComparison
from bench.harness import REDIS_URL
from bench.idle import IdleOverhead
from bench.pool import pool_table
from bench.priority import PriorityResult
from bench.scenarios import Cell

PACKAGES = ("celery", "kombu", "redis", "gevent", "openai", "httpx2", "fastapi", "uvicorn")
CPU_RATIO_TARGET = 1.5
THROUGHPUT_RATIO_TARGET = 100.0
PRIORITY_WAIT_TARGET_S = 1.0
OVERHEAD_TARGET_MS = 20.0


@dataclass
class Run:
    command: str
    started: datetime
    duration_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    courier: list[Cell]
    baseline: list[Cell]
    cpu: CpuComparison | None
    priority: PriorityResult | None
    idle: IdleOverhead | None
    hotspots: list[str]
    notes: list[str]
    busy_before: list[str]
    busy_after: list[str]
    probe: list[tuple[int, int, float, float]]
    submit_concurrency: int
    submit_batch: int
    reruns: list[str]
    pool: list[Cell] = field(default_factory=list)  # bench.pool's A/B cells


def _f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "/")


def reading(run: Run) -> list[str]:
    """What bounds the figures, computed from them."""
    ran = [c for c in run.courier if c.throughput and c.submit_rate and c.cpu_ms_per_job]
    single = [c for c in ran if c.processes == 1]
    if not single:
        return []
    best = max(ran, key=lambda c: c.throughput or 0)
    big = [c for c in ran if c.jobs >= 1000] or ran
    submits = sorted(c.submit_rate or 0 for c in big)
    cpu = sorted(c.cpu_ms_per_job or 0 for c in single if c in big) or [0.0]
    return [
        f"Reading: Courier peaked at {best.throughput:.1f} jobs/s ({best.jobs} jobs at "
        f"{best.latency:g} s, {best.processes} worker process(es)). End to end it is bounded by "
        f"the slower of the API's submit rate while the workers run ({submits[0]:.0f}-"
        f"{submits[-1]:.0f} jobs/s in the largest cells) and the workers' CPU "
        f"({cpu[0]:.1f}-{cpu[-1]:.1f} ms per job in one process, i.e. at most "
        f"~{1000 / max(cpu[0], 0.1):.0f} jobs/s per core it has to itself; the API, Redis and "
        "the simulator share the same two cores). Past that, extra jobs wait in the queue "
        "(queue wait) or, once admitted to the 1,000 slots, share the CPU (p50 - queue wait - "
        "latency).",
        "",
    ]


def _mb(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f}"


def machine_lines(run: Run) -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        client = redis.Redis.from_url(REDIS_URL)
        redis_version = str(client.info("server")["redis_version"])
        client.close()
    except redis.RedisError:
        redis_version = "?"
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    load = " / ".join(f"{x:.2f}" for x in run.load_before)
    load_after = " / ".join(f"{x:.2f}" for x in run.load_after)
    return [
        "| machine | |",
        "|---|---|",
        f"| date | {run.started:%Y-%m-%d %H:%M} UTC, {run.duration_s / 60:.1f} min |",
        f"| CPUs (nproc) | {os.cpu_count()} x {cpu} |",
        f"| load average 1/5/15 min, before → after | {load} → {load_after} |",
        f"| Python | {platform.python_version()} ({platform.machine()}) |",
        f"| Redis server | {redis_version} |",
        f"| packages | {versions} |",
        f"| other busy processes at start | {_cell('; '.join(run.busy_before) or 'none')} |",
        f"| other busy processes at end | {_cell('; '.join(run.busy_after) or 'none')} |",
    ]


def courier_table(cells: Iterable[Cell]) -> list[str]:
    lines = [
        "| worker processes | latency (s) | jobs | submit rate (jobs/s) | throughput (jobs/s) "
        "| p50 (s) | p95 (s) | p99 (s) | overhead p50 (s) | queue wait p50 (s) "
        "| peak in-flight | worker RSS idle → peak (MB) | KB per in-flight job "
        "| worker CPU per job (ms) | failed | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if not c.ran:
            lines.append(
                f"| {c.processes} | {c.latency:g} | {c.jobs} | not run |{' |' * 11} {c.note} |"
            )
            continue
        lines.append(
            f"| {c.processes} | {c.latency:g} | {c.jobs} | {_f(c.submit_rate, 0)} "
            f"| {_f(c.throughput, 1)} "
            f"| {_f(c.p50)} | {_f(c.p95)} | {_f(c.p99)} | {_f(c.overhead)} | {_f(c.wait_p50)} "
            f"| {c.peak_in_flight} | {_mb(c.rss_idle)} → {_mb(c.rss_peak)} "
            f"| {_f(c.kb_per_in_flight, 0)} | {_f(c.cpu_ms_per_job, 1)} | {c.failed} "
            f"| {c.note.rstrip('; ')} |"
        )
    return lines


def baseline_table(cells: Iterable[Cell]) -> list[str]:
    lines = [
        "| latency (s) | jobs | throughput (jobs/s) | p50 (s) | p95 (s) | p99 (s) "
        "| overhead p50 (s) | worker CPU per job (ms) | failed | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if not c.ran:
            lines.append(f"| {c.latency:g} | {c.jobs} | not run | | | | | | | {c.note} |")
            continue
        lines.append(
            f"| {c.latency:g} | {c.jobs} | {_f(c.throughput, 2)} | {_f(c.p50)} | {_f(c.p95)} "
            f"| {_f(c.p99)} | {_f(c.overhead)} | {_f(c.cpu_ms_per_job, 1)} | {c.failed} "
            f"| {c.note.rstrip('; ')} |"
        )
    return lines


def ratios(courier: list[Cell], baseline: list[Cell]) -> list[tuple[float, int, Cell, Cell]]:
    """Per (worker processes, latency): the largest job count both ran, with both cells."""
    out = []
    for processes, latency in sorted({(c.processes, c.latency) for c in courier}):
        ours = {
            c.jobs: c
            for c in courier
            if c.latency == latency and c.processes == processes and c.throughput
        }
        theirs = {c.jobs: c for c in baseline if c.latency == latency and c.throughput}
        common = sorted(set(ours) & set(theirs))
        if common:
            jobs = common[-1]
            out.append((latency, jobs, ours[jobs], theirs[jobs]))
    return out


def ratio_table(courier: list[Cell], baseline: list[Cell]) -> list[str]:
    lines = [
        "| Courier worker processes | latency (s) | jobs (largest count both ran) "
        "| Courier (jobs/s) | baseline (jobs/s) | Courier ÷ baseline | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for latency, jobs, ours, theirs in ratios(courier, baseline):
        assert ours.throughput and theirs.throughput
        ratio = ours.throughput / theirs.throughput
        target = f"≥ {THROUGHPUT_RATIO_TARGET:g}x" if latency == 1 else ""
        if target:
            target += " met" if ratio >= THROUGHPUT_RATIO_TARGET else " **not met**"
        lines.append(
            f"| {ours.processes} | {latency:g} | {jobs} | {ours.throughput:.1f} "
            f"| {theirs.throughput:.2f} | {ratio:.1f}x | {target} |"
        )
    best = [c for c in courier if c.throughput]
    for latency in sorted({c.latency for c in best}):
        ours_best = max((c for c in best if c.latency == latency), key=lambda c: c.throughput or 0)
        theirs_best = [c for c in baseline if c.latency == latency and c.throughput]
        if theirs_best:
            big = max(theirs_best, key=lambda c: c.jobs)
            assert ours_best.throughput and big.throughput
            lines.append(
                f"| {ours_best.processes} | {latency:g} "
                f"| each at its best: Courier {ours_best.jobs}, baseline {big.jobs} "
                f"| {ours_best.throughput:.1f} | {big.throughput:.2f} "
                f"| {ours_best.throughput / big.throughput:.1f}x | (for reference) |"
            )
    return lines


def cpu_table(cpu: CpuComparison) -> list[str]:
    lines = [
        "| cell | bare SDK CPU per call before (ms) | worker CPU per job (ms) "
        "| bare after (ms) | worker ÷ bare | intake off: worker CPU per job (ms) | ÷ bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, rep in enumerate(cpu.reps, 1):
        off = rep.celery_consumer_ms
        lines.append(
            f"| {i}: {cpu.jobs} jobs at 0 s | {rep.bare_before_ms:.2f} | {rep.worker_ms:.2f} "
            f"| {rep.bare_after_ms:.2f} | {rep.ratio:.2f}x | {_f(off, 2)} "
            f"| {f'{off / rep.bare_ms:.2f}x' if off else '—'} |"
        )
    if cpu.reps:
        ratio = cpu.median_ratio
        verdict = "met" if ratio <= CPU_RATIO_TARGET else "**not met**"
        lines.append(
            f"| **median** | | | | **{ratio:.2f}x** (target ≤ {CPU_RATIO_TARGET:g}x: {verdict}) "
            "| | |"
        )
    gain = cpu.median_intake_gain
    if gain:
        lines += [
            "",
            f"The intake's own effect, cell by cell in the same run: worker CPU per job with it "
            f"÷ with Celery's consumer taking the job messages (`COURIER_WORKER_INTAKE=false`, "
            f"calls still in the call pool): median **{gain:.2f}x**.",
        ]
    return lines


def idle_table(idle: IdleOverhead) -> list[str]:
    verdict = "met" if idle.e2e_p50_ms < OVERHEAD_TARGET_MS else "**not met**"
    return [
        "| jobs (sequential, simulator at 0 s) | queue wait p50 (ms) | run p50 (ms) "
        f"| submit → succeeded p50 (ms) | p95 (ms) | target p50 < {OVERHEAD_TARGET_MS:g} ms |",
        "|---|---|---|---|---|---|",
        f"| {idle.jobs} | {idle.wait_p50_ms:.1f} | {idle.run_p50_ms:.1f} "
        f"| {idle.e2e_p50_ms:.1f} | {idle.e2e_p95_ms:.1f} | {verdict} |",
        "",
        "Each job is `POST /v1/jobs`, then `GET ?wait=` until it ends, then the next: no "
        "queueing, so this is what the pipeline (API, Redis, the worker taking the message, "
        "claim, call, record) adds to the provider's own time. The matrix's overhead column "
        "also holds the time jobs wait behind one another.",
    ]


def priority_table(p: PriorityResult) -> list[str]:
    verdict = ""
    if p.wait_p95 is not None:
        verdict = "met" if p.wait_p95 < PRIORITY_WAIT_TARGET_S else "**not met**"
    return [
        "| low backlog | high jobs (spread) | latency (s) | fill (s) | in flight / low queued "
        "when highs arrive | high wait p50 (s) | high wait p95 (s) | max (s) | high run p50 (s) "
        "| high e2e p50 (s) "
        "| lows started while a high waited | target p95 < 1 s | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {p.backlog} | {p.high_jobs} ({p.high_ended} ended) | {p.latency:g} "
        f"| {p.fill_s:.0f} | {p.in_flight_at_submit} / {p.low_queued_at_submit} "
        f"| {_f(p.wait_p50, 3)} | {_f(p.wait_p95, 3)} | {_f(p.wait_max, 3)} "
        f"| {_f(p.run_p50)} | {_f(p.e2e_p50)} | {p.overtaking_lows} | {verdict} "
        f"| {p.note.rstrip('; ')} |",
    ]


def probe_table(probe: list[tuple[int, int, float, float]]) -> list[str]:
    def shape(batch: int) -> str:
        return f"`POST /v1/jobs/batch`, {batch} jobs each" if batch else "`POST /v1/jobs`"

    return [
        "| request | requests in flight | jobs/s | API CPU per job (ms) |",
        "|---|---|---|---|",
        *(f"| {shape(b)} | {c} | {rate:.0f} | {cpu:.1f} |" for b, c, rate, cpu in probe),
    ]


def render(run: Run) -> str:
    lines = [
        "# Courier benchmark",
        "",
        f"Reproduce: `{run.command}` (or `make bench`; `python -m bench.run --help` for the "
        "matrix flags). Local Redis DB 12 (Courier) and 11 (baseline), flushed per cell; the "
        "provider simulator (`python -m simulator`) at each latency.",
        "",
        *machine_lines(run),
        "",
        *(f"Re-run later and merged here (`--update`): {r}." for r in run.reruns),
        *([""] if run.reruns else []),
        "Courier: `courier api` + `courier worker` (shipped defaults: `-P gevent -c 1000`), "
        "restarted for each cell and warmed up with a few jobs; one worker process per cell, "
        "and the scale-out cells run one per core (as the baseline does). Jobs are submitted "
        + (
            f"through `POST /v1/jobs/batch`, {run.submit_batch} jobs per request, "
            if run.submit_batch
            else "one per `POST /v1/jobs`, "
        )
        + f"{run.submit_concurrency} requests in flight (httpx + uvloop; see the API's rates "
        "below). Latency = `finished_at - created_at` from the job records; throughput = jobs "
        "÷ (last finished - first created), so it includes the submit phase; overhead = p50 - "
        "simulated latency; queue wait = `started_at - created_at`; in-flight = peak `ZCARD "
        "courier:running` (50 ms samples); RSS per in-flight job = (peak RSS - idle RSS) ÷ "
        "peak in-flight; CPU = worker user+sys (psutil) ÷ jobs. Per-tenant quotas are off "
        "(`COURIER_TENANT_SUBMIT_RATE=0`).",
        "",
        "Baseline (`bench/baseline.py`, the seeds' design): its own Celery app on Redis DB 11, "
        f"`-P prefork -c {os.cpu_count()}`, the OpenAI SDK called in the task with tenacity "
        "retries, jobs sent with `delay()`.",
        "",
        "Figures depend on what else the machine runs: see the load average and the busy "
        "processes above.",
        "",
        "## Courier",
        "",
        *courier_table(run.courier),
        "",
        "## Baseline",
        "",
        *baseline_table(run.baseline),
        "",
        "## Throughput ratios",
        "",
        *ratio_table(run.courier, run.baseline),
        "",
        *reading(run),
    ]
    if run.probe:
        lines += [
            "## API submit rate alone (no worker running)",
            "",
            *probe_table(run.probe),
            "",
            "`POST /v1/jobs` runs in the API's threadpool, one job per request; a batch "
            "stores its jobs in one Redis round trip and enqueues them over one connection.",
            "",
        ]
    if run.cpu is not None:
        lines += ["## Worker CPU vs a bare SDK call", "", *cpu_table(run.cpu), ""]
        lines += [
            "Each cell: one worker, the jobs submitted through the API, the worker's user+sys "
            "CPU (psutil, all its threads) ÷ jobs. Bare: "
            f"{run.cpu.calls} sequential `openai.OpenAI(...).chat.completions.create` calls "
            "against the simulator at 0 s in a fresh interpreter, `time.process_time()` ÷ "
            "calls, run before and after each cell; each ratio uses the mean of the two. This "
            "machine's speed drifts by up to 2x within minutes (a shared host), hence the "
            "interleaving and the median.",
            "",
        ]
    if run.pool:
        lines += [
            "## Memory: the call pool vs calls held in Celery's tasks",
            "",
            "The same cell (1,000 jobs at 5 s) with `COURIER_WORKER_CALL_POOL=true` (the "
            "default; jobs taken by the intake) and `false` (jobs taken by Celery's consumer, "
            "each call held in its task), alternating (see the README's *Worker model*).",
            "",
            *pool_table(run.pool),
            "",
        ]
    if run.idle is not None:
        lines += ["## Pipeline overhead, one job at a time", "", *idle_table(run.idle), ""]
    if run.priority is not None:
        lines += ["## High priority behind a low backlog", "", *priority_table(run.priority), ""]
        lines += [
            "Backlog stored and enqueued on `jobs.low` directly (as the API does), then the "
            "worker started; once it was saturated, high jobs were POSTed through the API, "
            "spread evenly. Wait = `started_at - created_at` (the job claimed by a worker "
            "slot); run = `finished_at - started_at`; lows started while a high waited = low "
            "jobs whose `started_at` falls inside some high job's wait.",
            "",
        ]
    if run.hotspots:
        lines += ["## Worker hot spots", "", *run.hotspots, ""]
    if run.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in run.notes), ""]
    return "\n".join(lines)
