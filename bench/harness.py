"""Processes and measurements shared by the benchmark scenarios.

Real processes as users start them: the provider simulator, ``courier api``, ``courier
worker`` with its shipped defaults (``-P gevent -c 1000``) and the baseline's prefork
worker. A sampler thread watches a worker (RSS, in-flight jobs) while a scenario runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from core import keys
from tests.support import stack
from tests.support.procs import Proc, free_port, python_module, wait_until
from tests.support.simulator import SimulatorHandle

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
BASELINE_REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/11")
API_KEY = "bench-key"
LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", f"/tmp/courier-bench-{os.getpid()}"))
TERMINAL = ("succeeded", "failed", "cancelled", "expired")
os.environ.setdefault("COURIER_TEST_LOGDIR", str(LOG_DIR))


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---- processes -------------------------------------------------------------------


class Simulator:
    """``python -m simulator`` at a given latency (changed live between cells)."""

    def __init__(self, latency: float) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = python_module(
            "simulator", "--port", str(port), "--latency", str(latency), name="sim"
        )
        self.handle = SimulatorHandle(f"http://127.0.0.1:{port}")
        wait_until(self.handle.health, timeout=30)
        self.latency = latency

    def set_latency(self, latency: float) -> None:
        self.handle.reset()
        self.handle.configure(latency=latency)
        self.latency = latency

    def stop(self) -> None:
        self.proc.stop()


def courier_env(sim: Simulator, **extra: str) -> dict[str, str]:
    return {
        "COURIER_REDIS_URL": REDIS_URL,
        "COURIER_API_KEYS": f"bench:{API_KEY}",
        "OPENAI_BASE_URL": sim.handle.openai_base_url,
        "OPENAI_API_KEY": "sim-key",
        "ANTHROPIC_BASE_URL": sim.handle.anthropic_base_url,
        "ANTHROPIC_API_KEY": "sim-key",
        # Only so that stopping a worker with a backlog in flight does not take 30 s.
        "COURIER_SHUTDOWN_GRACE_S": "2",
        # The bench measures capacity, not the per-tenant quotas (100 submits/s, 10,000
        # unfinished jobs by default), which would cap it.
        "COURIER_TENANT_SUBMIT_RATE": "0",
        "COURIER_TENANT_MAX_UNFINISHED": "0",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def start_api(sim: Simulator) -> tuple[Proc, str]:
    return stack.start_api(courier_env(sim))


def start_courier_worker(sim: Simulator, *args: str, env: dict[str, str] | None = None) -> Proc:
    """``courier worker`` with the shipped defaults (it execs celery: same pid); ``env``
    overrides some of its settings."""
    name = f"bench-{time.monotonic_ns()}@%h"
    proc = python_module(
        "producers.cli", "worker", "-n", name, *args, env=courier_env(sim, **(env or {})),
        name="worker",
    )  # fmt: skip
    _wait_ready(proc)
    return proc


def start_baseline_worker(sim: Simulator, concurrency: int) -> Proc:
    env = {
        "BASELINE_REDIS_URL": BASELINE_REDIS_URL,
        "OPENAI_BASE_URL": sim.handle.openai_base_url,
        "OPENAI_API_KEY": "sim-key",
        "PYTHONUNBUFFERED": "1",
    }
    proc = Proc(
        [
            sys.executable, "-m", "celery", "-A", "bench.baseline", "worker",
            "-P", "prefork", "-c", str(concurrency), "-Q", "baseline",
            "-n", f"baseline-{time.monotonic_ns()}@%h",
            "--without-gossip", "--without-mingle", "-l", "INFO",
        ],
        env=env,
        name="baseline",
    )  # fmt: skip
    _wait_ready(proc)
    return proc


def _wait_ready(proc: Proc) -> None:
    try:
        wait_until(lambda: " ready." in proc.output(), timeout=60)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"worker did not start:\n{proc.output()[-3000:]}") from None


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children (prefork pools)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


# ---- sampling --------------------------------------------------------------------


@dataclass
class Samples:
    peak_in_flight: int = 0
    rss_at_peak: int = 0
    peak_rss: int = 0
    count: int = 0
    running_series: list[tuple[float, int]] = field(default_factory=list)


class Sampler(threading.Thread):
    """Every ``interval`` s: ``ZCARD courier:running`` and the workers' summed RSS."""

    def __init__(
        self, worker_pids: int | list[int], interval: float = 0.05, running_key: str = ""
    ) -> None:
        super().__init__(daemon=True)
        self.redis = redis.Redis.from_url(REDIS_URL)
        pids = [worker_pids] if isinstance(worker_pids, int) else worker_pids
        self.workers = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.running_key = running_key or keys.RUNNING
        self.samples = Samples()
        self._stop_event = threading.Event()

    def run(self) -> None:
        samples = self.samples
        while not self._stop_event.is_set():
            try:
                in_flight = int(self.redis.zcard(self.running_key))
                rss = sum(int(w.memory_info().rss) for w in self.workers)
            except (redis.RedisError, psutil.Error):
                in_flight, rss = 0, 0
            samples.count += 1
            samples.running_series.append((time.time(), in_flight))
            samples.peak_rss = max(samples.peak_rss, rss)
            if in_flight > samples.peak_in_flight:
                samples.peak_in_flight, samples.rss_at_peak = in_flight, rss
            self._stop_event.wait(self.interval)

    def stop(self) -> Samples:
        self._stop_event.set()
        self.join(5)
        self.redis.close()
        return self.samples


# ---- job records -----------------------------------------------------------------


def wait_terminal(
    client: redis.Redis,
    key_of: Iterable[str],
    timeout: float,
    interval: float = 0.5,
) -> tuple[bool, int]:
    """Poll the status field of the given record keys until all are terminal.
    Returns (all ended, how many ended)."""
    pending = list(key_of)
    total = len(pending)
    deadline = time.monotonic() + timeout
    while pending:
        statuses: list[str | None] = []
        for start in range(0, len(pending), 2000):
            pipe = client.pipeline(transaction=False)
            for key in pending[start : start + 2000]:
                pipe.hget(key, "status")
            statuses += pipe.execute()
        pending = [k for k, s in zip(pending, statuses, strict=True) if s not in TERMINAL]
        if not pending:
            break
        if time.monotonic() > deadline:
            return False, total - len(pending)
        time.sleep(interval)
    return True, total


def read_times(client: redis.Redis, record_keys: Sequence[str]) -> list[dict[str, str]]:
    """status, created_at, started_at, finished_at of each record (seconds since epoch)."""
    fields = ("status", "created_at", "started_at", "finished_at")
    out: list[dict[str, str]] = []
    for start in range(0, len(record_keys), 2000):
        pipe = client.pipeline(transaction=False)
        for key in record_keys[start : start + 2000]:
            pipe.hmget(key, fields)
        for values in pipe.execute():
            out.append({k: v for k, v in zip(fields, values, strict=True) if v is not None})
    return out
