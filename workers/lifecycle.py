"""Worker process lifecycle: start the lease/sweep loops; bounded graceful shutdown.

On SIGTERM Celery stops taking work and waits for running tasks, and Courier for the calls
of its call pool (``workers.run.pool``). Courier bounds that wait: after
``shutdown_grace_s`` the jobs still running are handed back to the queue (another worker
runs them at once) and the worker stops.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

from celery.exceptions import CPendingDeprecationWarning
from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from config.celery import VISIBILITY_TIMEOUT_S
from config.providers import ProviderConfig
from config.settings import get_settings
from core.callbacks import CallbackSchedule
from core.celery_app import app
from core.credentials import env_api_key
from core.logs import configure_logging
from core.metrics import count_finished
from core.queues import enqueue_callback, enqueue_job
from workers import broker
from workers.metrics import Flusher, worker_metrics
from workers.providers import import_adapters
from workers.providers.factory import missing_key_message
from workers.run import pool
from workers.runtime import get_runtime, reset_runtime
from workers.sweeper import Sweeper

log = logging.getLogger("courier.worker")
_sweepers: dict[int, Sweeper] = {}
_flushers: dict[int, Flusher] = {}
_shutdown_deadline: list[float] = []  # monotonic time by which running jobs are handed back


def _expired_while_queued(job_id: str, has_callback: bool) -> None:
    try:
        count_finished(get_runtime().redis, job_id, "expired")
    except Exception as exc:  # a metric must never cost the job its callback
        log.warning("expiry of %s not counted: %s", job_id, exc)
    if has_callback:
        enqueue_callback(app, job_id)


def start_background() -> Sweeper:
    """Start this process's loops once (per pid: prefork children get their own)."""
    pid = os.getpid()
    if pid not in _sweepers:
        callbacks = CallbackSchedule(get_runtime().redis)
        sweeper = Sweeper(
            runtime=get_runtime(),
            enqueue_job=lambda job_id, priority: enqueue_job(app, job_id, priority),
            enqueue_callback=lambda job_id: enqueue_callback(app, job_id),
            on_expired=_expired_while_queued,
            due_callbacks=callbacks.due,
            next_callback_at=callbacks.next_due,
            restore_messages=lambda: broker.restore_unacked(app),
            orphan_after_s=orphan_after_s(),
        )
        sweeper.start()
        _sweepers[pid] = sweeper
        flusher = Flusher(worker_metrics().buffer, get_runtime().redis)
        flusher.start()
        _flushers[pid] = flusher
    return _sweepers[pid]


def orphan_after_s() -> float | None:
    """Lost messages can be detected only when the broker is the job store's Redis."""
    settings = get_runtime().settings
    if not settings.broker_is_store:
        return None
    return VISIBILITY_TIMEOUT_S + 30


def hand_back_running_jobs() -> int:
    """Return every job this process still runs to the queue, due now."""
    runtime = get_runtime()
    handed = 0
    for job_id, token in runtime.leases.snapshot().items():
        if runtime.store.requeue(job_id, token, 0, "handoff"):
            handed += 1
        runtime.leases.remove(job_id)
    return handed


def _bounded_shutdown(grace_s: float) -> None:
    runtime = get_runtime()
    stop = threading.Event()
    if stop.wait(grace_s) or not runtime.leases.snapshot():
        return
    handed = hand_back_running_jobs()
    log.warning("shutdown grace of %.0fs over: handed %d running job(s) back", grace_s, handed)
    os.kill(os.getpid(), signal.SIGQUIT)


@setup_logging.connect
def _setup_logging(loglevel: str | int | None = None, **_: Any) -> None:
    """Courier's JSON lines (redacted) instead of Celery's own log format."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(
        str(level or "INFO"), json_lines=os.environ.get("COURIER_LOG_FORMAT") != "text"
    )


@worker_init.connect
def _worker_init(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    if settings.worker_call_pool and pool.suits(settings.celery_broker_url):
        pool.install(int(sender.concurrency))


@celeryd_after_setup.connect
def _preload_sdks(**_: Any) -> None:
    """Say which named providers lack their key; import the SDKs of the providers whose key
    is set (they add to the worker's RSS from the start: README, Configuration). Logging is set
    up by now, and no job is taken and no prefork child forked yet."""
    settings = get_settings()
    keyed = check_provider_keys(settings.provider_catalogue, settings.providers)
    if settings.worker_preload_sdks:
        started = time.monotonic()
        imported = import_adapters(dict.fromkeys(config.api for config in keyed.values()))
        took = time.monotonic() - started
        log.info("provider SDKs imported (%s) in %.1f s", ", ".join(imported) or "none", took)


@celeryd_after_setup.connect
def _quiet_reconnect_warning(**_: Any) -> None:
    """Celery warns on every broker reconnect that it will cancel late-acked tasks on
    connection loss from 6.0 on. Courier's jobs run in its call pool, not in Celery's tasks,
    and it keeps that setting off on purpose (a callback delivery cut off mid-send would wait
    for the visibility timeout). Celery's logging setup resets the filters: set after it."""
    warnings.filterwarnings(
        "ignore", message=r"\s*In Celery 5.1 we introduced", category=CPendingDeprecationWarning
    )


def check_provider_keys(
    catalogue: Mapping[str, ProviderConfig], named: Mapping[str, ProviderConfig]
) -> dict[str, ProviderConfig]:
    """The providers whose key is set. A named provider without one is an error in the log
    (its jobs fail with ``authentication``; the worker runs the others); a built-in one
    without a key is only not in use."""
    keyed = {}
    for name, config in catalogue.items():
        if env_api_key(name, catalogue):
            keyed[name] = config
        elif name in named:
            log.error(
                "%s; its jobs will fail with error type 'authentication' until the worker "
                "restarts with %s set",
                missing_key_message(name, config),
                config.api_key_env,
            )
    return keyed


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    reset_runtime()
    start_background()
    tune_gc()


@worker_ready.connect
def _worker_ready(**_: Any) -> None:
    start_background()
    tune_gc()


# A busy worker spent a large share of its CPU in the cyclic collector with Python's defaults
# (README, Worker model): each job allocates thousands of objects, so a young collection
# (every 700) ran several times per job, and each old collection walked every module and class
# loaded at start-up.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Collect less often once started; what start-up built stays for good, so freeze it
    out of every collection."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    for sweeper in _sweepers.values():
        sweeper.stop_sweeps()
    grace = get_runtime().settings.shutdown_grace_s
    _shutdown_deadline.append(time.monotonic() + grace)
    _in_background(_bounded_shutdown, grace)


def _in_background(target: Any, *args: Any) -> None:
    """Start ``target`` without blocking: this runs inside a signal handler, where a gevent
    worker must not switch (starting a patched Thread waits, and raises
    BlockingSwitchOutError there), so under gevent it is a plain greenlet."""
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        gevent.spawn(target, *args)
    else:
        threading.Thread(target=target, args=args, daemon=True).start()


@worker_shutdown.connect
def _shut_down(**_: Any) -> None:
    """Wait for the call pool's jobs (handing back those still running at the grace's end),
    then flush the metrics a last time."""
    _drain_call_pool()
    flusher = _flushers.pop(os.getpid(), None)
    if flusher is not None:
        try:
            flusher.stop()
        except Exception as exc:  # at most the last second of counts is lost
            log.warning("last metrics flush failed: %s", exc)


def _drain_call_pool() -> None:
    """Keep the process alive while its calls run: at the grace's end _bounded_shutdown hands
    back the jobs still running (and this wait ends soon after)."""
    calls = pool.call_pool()
    if calls is None or not len(calls):
        return
    grace = get_runtime().settings.shutdown_grace_s
    deadline = _shutdown_deadline[0] if _shutdown_deadline else time.monotonic() + grace
    if not calls.drain(max(0.0, deadline - time.monotonic() + 1.0)):
        handed = hand_back_running_jobs()
        log.warning("call pool still busy after the grace: handed %d job(s) back", handed)
