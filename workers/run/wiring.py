"""The job path of this process, built once (a forked child builds its own)."""

from __future__ import annotations

import os
import threading

from core.celery_app import app
from core.queues import enqueue_callback
from workers.metrics import metered, worker_metrics
from workers.providers import get_provider
from workers.run import pool
from workers.run.breaker import build_breaker
from workers.run.flower import FlowerView
from workers.run.hooks import Callback, Hook, Hooks, LogLines, Metrics
from workers.run.path import JobPath
from workers.run.runner import JobRunner, Limiter
from workers.runtime import Runtime, get_runtime

_paths: dict[int, JobPath] = {}
_lock = threading.Lock()


def build_limiter(runtime: Runtime) -> Limiter | None:
    """The cluster-wide rate limiter when COURIER_LIMITS names any limit."""
    if not runtime.settings.limits:
        return None
    from core.ratelimit import build_limiter as build

    limiter: Limiter = build(runtime)
    return limiter


def build_runner(runtime: Runtime) -> JobRunner:
    settings = runtime.settings
    return JobRunner(
        runtime=runtime,
        get_provider=metered(get_provider, worker_metrics),
        breaker=build_breaker(settings, runtime.redis),
        limiter=build_limiter(runtime),
    )


def build_hooks(runtime: Runtime, flower: FlowerView | None) -> Hooks:
    hooks: list[Hook] = [
        LogLines(),
        Metrics(worker_metrics, runtime.redis),
        Callback(lambda job_id: enqueue_callback(app, job_id)),
    ]
    return Hooks([*hooks, flower] if flower is not None else hooks)


def job_path() -> JobPath:
    """This process's job path."""
    pid = os.getpid()
    path = _paths.get(pid)
    if path is None:
        with _lock:
            path = _paths.get(pid)
            if path is None:
                runtime = get_runtime()
                calls = pool.call_pool()
                flower = (
                    FlowerView(list_active=calls is not None)
                    if app.conf.worker_send_task_events
                    else None
                )
                path = JobPath(build_runner(runtime), build_hooks(runtime, flower), calls)
                path.flower = flower
                _paths[pid] = path
    return path
