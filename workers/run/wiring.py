"""The job path of this process, built once (a forked child builds its own)."""

from __future__ import annotations

import logging
import os
import threading

import redis

from core.cache import AnswerCache
from core.celery_app import app
from core.cost.ledger import BudgetDirectory, Ledger
from core.cost.prices import PriceTable
from core.event_writer import EventWriter
from core.queues import enqueue_callback, enqueue_job
from workers.metrics import metered, worker_metrics
from workers.providers import get_provider
from workers.run import pool
from workers.run.breaker import build_breaker
from workers.run.flower import FlowerView
from workers.run.hooks import Callback, Children, Hook, Hooks, LogLines, Metrics
from workers.run.outputs import OutputPublisher
from workers.run.path import JobPath
from workers.run.ports import Limiter
from workers.run.runner import JobRunner
from workers.run.spending import Spending
from workers.runtime import Runtime, get_runtime

log = logging.getLogger("courier.worker")

_paths: dict[int, JobPath] = {}
_lock = threading.Lock()


def build_limiter(runtime: Runtime) -> Limiter | None:
    """The cluster-wide rate limiter when COURIER_LIMITS names any limit."""
    if not runtime.settings.limits:
        return None
    from core.ratelimit import build_limiter as build

    limiter: Limiter = build(runtime)
    return limiter


def build_spending(runtime: Runtime) -> Spending:
    """Cost per call, budgets and the answer cache; ``COURIER_BUDGETS`` seeds the ledger."""
    settings = runtime.settings
    ledger = Ledger(runtime.redis)
    try:
        ledger.seed(settings.budgets)
    except redis.RedisError as exc:  # the API seeds it too; the worker's next start again
        log.warning("COURIER_BUDGETS not written to Redis: %s", exc)
    cache = AnswerCache(
        runtime.redis, settings.cache_max_entry_bytes, settings.cache_max_tenant_bytes
    )
    return Spending(ledger, PriceTable(settings.prices), BudgetDirectory(ledger), cache)


def build_runner(runtime: Runtime) -> JobRunner:
    settings = runtime.settings
    return JobRunner(
        runtime=runtime,
        get_provider=metered(get_provider, worker_metrics),
        breaker=build_breaker(settings, runtime.redis),
        limiter=build_limiter(runtime),
        spending=build_spending(runtime),
        outputs=OutputPublisher(
            EventWriter(runtime.redis),
            settings.stream_flush_ms / 1000,
            settings.stream_chunk_timeout_s,
        ),
    )


def build_hooks(runtime: Runtime, flower: FlowerView | None) -> Hooks:
    hooks: list[Hook] = [
        Children(lambda job_id, priority: enqueue_job(app, job_id, priority)),  # first: soonest
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
