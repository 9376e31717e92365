"""Flower's view of a job: its ``courier.run_job`` task follows the job (one hook).

Flower builds a task's state only from task events keyed by the task's id, and lists a
worker's active tasks from ``inspect active`` (``celery.worker.state.active_requests``) and
the count in its heartbeats. Celery's own events would say the wrong thing here: the intake
claims a job and hands its call to the call pool, so a task Celery ran would be "succeeded"
in milliseconds while the call runs on. So ``courier.run_job`` sends no events of its own
(``send_events=False``) and this hook sends them for the whole run:

    claimed                 task-received, task-started; listed among the worker's active tasks
    succeeded               task-succeeded, runtime = the run's, from claim to end
    failed                  task-failed, exception = "JobFailed('<error type>: <message>')"
    cancelled, expired      task-revoked (expired=True for an expiry)
    back to the schedule    task-retried; the next run is a task of its own (a new message)

Only the job id crosses: the task's only argument. Events go through the worker's
dispatcher, which :mod:`workers.events` batches; a prefork child, which has none, builds its
own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from core.celery_app import app
from core.queues import RUN_JOB
from workers.run.hooks import Run
from workers.run.runner import Claimed, Outcome

log = logging.getLogger("courier.flower")

# Outcomes that mean the job was taken from this run: cancelled, or handed on after our
# lease lapsed (both show as revoked), or expired.
REVOKED_REASONS = frozenset({"ended_elsewhere", "cancelled", "expired"})


class _RunJobTask:
    """What Celery reads of an active request's task at a cold shutdown (``acks_late``)."""

    name = RUN_JOB
    acks_late = True


class ActiveJob:
    """A job running in the call pool, as ``inspect active`` lists a task (``Request.info``).

    Celery also treats it as one of its requests in two places: after a broker reconnect it
    moves the active requests into ``reserved_requests`` and sets each one's ``eventer`` (a
    Redis restart with jobs in flight made the worker exit with "Unrecoverable error:
    'ActiveJob' object has no attribute 'eventer'"), and a cold shutdown asks
    ``task.acks_late`` and ``acknowledged`` before cancelling it (acknowledged: never)."""

    __slots__ = ("__weakref__", "eventer", "hostname", "id", "job_id", "time_start", "worker_pid")
    task = _RunJobTask()
    acknowledged = True

    def __init__(self, run: Run, time_start: float) -> None:
        self.id = run.task_id
        self.job_id = run.job_id
        self.hostname = run.hostname
        self.time_start = time_start
        self.worker_pid = os.getpid()
        self.eventer: Any = None  # set by Celery after a reconnect; unused

    def info(self, safe: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": RUN_JOB,
            "type": RUN_JOB,
            "args": [self.job_id],
            "kwargs": {},
            "hostname": self.hostname,
            "time_start": self.time_start,
            "acknowledged": True,
            "delivery_info": {"routing_key": None, "priority": None, "redelivered": False},
            "worker_pid": self.worker_pid,
        }

    def cancel(self, *_: Any, **__: Any) -> None:
        """Celery may ask an active request to cancel after a broker reconnect: the job's
        lease, not Celery, decides who runs it."""


class FlowerView:
    """The hook; ``consumer`` is attached by :class:`FlowerEvents` in a worker's main process."""

    def __init__(self, list_active: bool) -> None:
        self.list_active = list_active  # calls run outside Celery's tasks (the call pool)
        self.consumer: Any = None
        self._own: Any = None  # a prefork child's dispatcher
        self._active: dict[str, ActiveJob] = {}  # strong refs: active_requests is a WeakSet
        self._lock = threading.Lock()

    def started(self, run: Run, claimed: Claimed) -> None:
        if not run.task_id:
            return
        self._send(
            run, "task-received", name=RUN_JOB, args=repr([run.job_id]), kwargs="{}",
            root_id=run.task_id, parent_id=None, retries=0, eta=None, expires=None,
        )  # fmt: skip
        self._send(run, "task-started")
        if self.list_active:
            job = ActiveJob(run, time_start=_wall_clock_started(run))
            with self._lock:
                self._active[run.task_id] = job
            worker_state.active_requests.add(job)

    def over(self, run: Run, outcome: Outcome) -> None:
        if not run.task_id:
            return
        with self._lock:
            job = self._active.pop(run.task_id, None)
        if job is not None:
            worker_state.active_requests.discard(job)
            # After a broker reconnect Celery also lists active requests as reserved, which the
            # call pool's gate counts as taken in: a job that ended must leave both.
            worker_state.reserved_requests.discard(job)
        status, runtime = outcome.status, run.runtime_s
        if status == "succeeded":
            self._send(run, "task-succeeded", result=repr(status), runtime=runtime)
        elif status == "failed" or outcome.reason == "run_raised":
            text = f"{outcome.reason}: {outcome.message}".rstrip(": ")
            self._send(run, "task-failed", exception=f"JobFailed({text!r})", traceback="",
                       runtime=runtime)  # fmt: skip
        elif status == "requeued":
            when = f"{outcome.reason}, again in {outcome.retry_in_s or 0:g} s"
            self._send(run, "task-retried", exception=f"Retry({when!r})", traceback="")
        elif status == "expired" or outcome.reason in REVOKED_REASONS:
            expired = status == "expired" or outcome.reason == "expired"
            self._send(run, "task-revoked", terminated=False, signum=None, expired=expired)
        else:  # a stale or duplicate message: its job was not this run's to change
            self._send(run, "task-succeeded", result=repr(f"skipped: {outcome.reason}"),
                       runtime=runtime)  # fmt: skip

    def _send(self, run: Run, event: str, **fields: Any) -> None:
        dispatcher = self._dispatcher(run)
        if dispatcher is None or not dispatcher.enabled:
            return
        try:
            dispatcher.send(event, uuid=run.task_id, **fields)
        except Exception as exc:  # Flower misses an event; the job runs on
            log.warning("%s of job %s not sent to Flower: %s", event, run.job_id, exc)

    def _dispatcher(self, run: Run) -> Any:
        if self.consumer is not None:
            return self.consumer.event_dispatcher  # a new one after each reconnect
        if not app.conf.worker_send_task_events:
            return None
        if self._own is None:  # a prefork child: no consumer in this process
            with self._lock:
                if self._own is None:
                    self._own = app.events.Dispatcher(
                        app.connection_for_write(), hostname=run.hostname, enabled=True
                    )
        return self._own


def _wall_clock_started(run: Run) -> float:
    return time.time() - run.runtime_s


class FlowerEvents(bootsteps.StartStopStep):  # type: ignore[misc]
    """Gives the process's :class:`FlowerView` the worker's consumer (and so its dispatcher)."""

    requires = ("celery.worker.consumer.events:Events",)

    def start(self, consumer: Any) -> None:
        from workers.run.wiring import job_path

        view = job_path().flower
        if view is not None:
            view.consumer = consumer
