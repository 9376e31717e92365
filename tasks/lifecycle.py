"""Worker process lifecycle: start the lease/sweep loops, stop them on shutdown."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from tasks.base import send_callback_if_due
from workers.app import app
from workers.queues import enqueue_callback, enqueue_job
from workers.runtime import get_runtime, reset_runtime
from workers.sweeper import Sweeper
from workers.webhooks.schedule import CallbackSchedule

log = logging.getLogger("courier.worker")
_sweepers: dict[int, Sweeper] = {}


def start_background() -> Sweeper:
    """Start this process's loops once (per pid: prefork children get their own)."""
    pid = os.getpid()
    if pid not in _sweepers:
        runtime = get_runtime()
        sweeper = Sweeper(
            runtime=runtime,
            enqueue_job=lambda job_id, priority: enqueue_job(app, job_id, priority),
            enqueue_callback=lambda job_id: enqueue_callback(app, job_id),
            on_expired=send_callback_if_due,
            due_callbacks=CallbackSchedule(runtime.redis).due,
        )
        sweeper.start()
        _sweepers[pid] = sweeper
    return _sweepers[pid]


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    reset_runtime()
    start_background()


@worker_ready.connect
def _worker_ready(**_: Any) -> None:
    start_background()


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    for sweeper in _sweepers.values():
        sweeper.stop_sweeps()
