"""The base class of Courier's tasks: per-process wiring shared by every task body.

Task bodies stay short: they get a runner or a sender from here and pass the job id.
The job record, not Celery's result backend, holds every outcome.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from celery import Task

from workers.app import app
from workers.breaker import CircuitBreaker
from workers.metrics import WorkerMetrics, metered, worker_metrics
from workers.providers import get_provider
from workers.queues import enqueue_callback
from workers.runner import JobRunner, Limiter
from workers.runtime import Runtime, get_runtime

log = logging.getLogger("courier.tasks")


def send_callback_if_due(job_id: str, has_callback: bool) -> None:
    if has_callback:
        enqueue_callback(app, job_id)


def build_limiter(runtime: Runtime) -> Limiter | None:
    """The cluster-wide rate limiter when COURIER_LIMITS names any limit."""
    if not runtime.settings.limits:
        return None
    from workers.ratelimit import build_limiter as build

    limiter: Limiter = build(runtime)
    return limiter


class CourierTask(Task):  # type: ignore[misc]
    """Holds the process's runtime; never stores results in Celery."""

    ignore_result = True
    typing = False

    @cached_property
    def runtime(self) -> Runtime:
        return get_runtime()

    @property
    def metrics(self) -> WorkerMetrics:
        return worker_metrics()  # per process (a forked child counts its own)

    @cached_property
    def runner(self) -> JobRunner:
        runtime = self.runtime
        return JobRunner(
            runtime=runtime,
            get_provider=metered(get_provider, worker_metrics),
            breaker=CircuitBreaker(
                runtime.redis,
                threshold=runtime.settings.breaker_threshold,
                cooldown_s=runtime.settings.breaker_cooldown_s,
            ),
            limiter=build_limiter(runtime),
            on_ended=send_callback_if_due,
        )

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # The job's lease lapses and the sweeper hands it to another worker.
        log.error("task %s for %s raised %s", self.name, args, type(exc).__name__)
