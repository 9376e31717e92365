"""Real Celery worker processes (and the env that points them at Redis and the simulator)."""

from __future__ import annotations

import signal
import sys
import time

import redis

from core import keys
from tests.support.procs import Proc, wait_until
from tests.support.simulator import SimulatorHandle

ALL_QUEUES = "jobs.high,jobs.normal,jobs.low,callbacks"


def courier_env(redis_url: str, sim: SimulatorHandle | None, **extra: str) -> dict[str, str]:
    env = {
        "COURIER_REDIS_URL": redis_url,
        "COURIER_CALLBACK_ALLOW_PRIVATE": "true",
        "COURIER_API_KEYS": "t1:key-one,t2:key-two",
        "PYTHONUNBUFFERED": "1",
        "COURIER_SHUTDOWN_GRACE_S": "1",
        "COURIER_WORKER_PRELOAD_SDKS": "false",  # ~1.7 s more per worker start; tested once
    }
    if sim is not None:
        env |= {
            "OPENAI_BASE_URL": sim.openai_base_url,
            "OPENAI_API_KEY": "sim-key",
            "ANTHROPIC_BASE_URL": sim.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sim-key",
        }
    return env | extra


def start_worker(
    redis_url: str,
    sim: SimulatorHandle | None,
    *,
    concurrency: int = 50,
    queues: str = ALL_QUEUES,
    name: str = "worker",
    env: dict[str, str] | None = None,
    wait: bool = True,
    prefix: list[str] | None = None,
) -> Proc:
    """A gevent worker as ``courier worker`` runs it; waits until it consumes."""
    hostname = f"{name}-{time.monotonic_ns()}@test"
    proc = Proc(
        [
            *(prefix or []), sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-P", "gevent", "-c", str(concurrency), "-Q", queues, "-n", hostname,
            "--without-gossip", "--without-mingle", "-l", "INFO",
        ],
        env=courier_env(redis_url, sim, **(env or {})),
        name=name,
    )  # fmt: skip
    return wait_ready(proc) if wait else proc


def wait_ready(proc: Proc, timeout: float = 40) -> Proc:
    """The worker process once it consumes; stopped, with its output raised, if it never does."""
    try:
        wait_until(lambda: " ready." in proc.output(), timeout=timeout)
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"the worker did not start:\n{proc.output()[-3000:]}") from None
    return proc


def sigterm_and_wait(proc: Proc, timeout: float = 30) -> float:
    """Send SIGTERM (a warm shutdown) and wait for the process to leave; seconds it took."""
    stopped_at = time.monotonic()
    proc.signal(signal.SIGTERM)
    proc.popen.wait(timeout)
    return time.monotonic() - stopped_at


def flush_queues(redis_url: str) -> None:
    """Forget every queued or running job of earlier tests: their broker messages, Courier's
    own queue indexes, schedule and leases (else the sweeper would rightly enqueue them
    again), and the messages set aside."""
    client = redis.Redis.from_url(redis_url)
    patterns = ("jobs.*", "courier:queued:*", "courier:scheduled", "courier:running", "unacked*",
                "courier:fair:*")  # fmt: skip
    for pattern in (*patterns, keys.SET_ASIDE):
        for key in client.scan_iter(pattern):
            client.delete(key)
    client.close()
