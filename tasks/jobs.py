"""``courier.run_job``: run one job, named by id (the message carries nothing else).

A gevent worker whose broker is the job store's Redis takes job messages with its intake
(``tasks.intake``), not through this task; the helpers below serve both. With the intake off
(``COURIER_WORKER_INTAKE=false``) the task only claims the job and hands the call to the
process's call pool (``workers.execution``); elsewhere it runs the whole job itself.
"""

from __future__ import annotations

import logging
import time

from celery.exceptions import Reject

from tasks import lifecycle  # noqa: F401  (connects the worker's background loops)
from tasks.base import CourierTask
from workers import execution
from workers.app import app
from workers.logs import job_event
from workers.metrics import count_finished
from workers.runner import Claimed, NotClaimed, Outcome

log = logging.getLogger("courier.jobs")
# The task's result as Flower shows it: the job runs on; its record says how it ends.
HANDED_TO_POOL = "claimed; running in the call pool"


@app.task(name="courier.run_job", base=CourierTask, bind=True, acks_late=True)
def run_job(self: CourierTask, job_id: str) -> str | None:
    """Returns what Flower shows as the task's result: where the job's call went."""
    started = time.monotonic()
    try:
        claimed = self.runner.claim(job_id)
    except NotClaimed:
        log.warning("job %s: store unreachable before the claim; message handed back", job_id)
        raise Reject(requeue=True) from None
    if isinstance(claimed, Outcome):
        report(self, job_id, claimed, started)
        return None
    calls = execution.call_pool()
    if calls is None:
        report(self, job_id, self.runner.run_claimed(claimed), started)
        return None
    calls.spawn(run_in_pool, self, claimed, started)
    return HANDED_TO_POOL


def run_in_pool(task: CourierTask, claimed: Claimed, started: float) -> None:
    try:
        report(task, claimed.job_id, task.runner.run_claimed(claimed), started)
    except Exception as exc:
        # As a failed task would: the lease lapses and the sweeper hands the job on.
        log.error("job %s: run raised %s", claimed.job_id, type(exc).__name__)


def report(task: CourierTask, job_id: str, outcome: Outcome, started: float) -> None:
    if outcome.status == "skipped":
        if outcome.reason == "ended_elsewhere":  # cancelled, or handed on meanwhile
            job_event(log, "job.outcome_dropped", job_id=job_id, model=outcome.model)
        return  # else a duplicate or stale message: the job is not this run's to change
    if outcome.status == "requeued":
        task.metrics.job_requeued(outcome.reason)
    elif outcome.model is None:  # expired before its claim: the record names model, priority
        count_finished(task.runtime.redis, job_id, outcome.status)
    else:
        task.metrics.job_finished(outcome.status, outcome.model, outcome.priority)
    job_event(
        log,
        f"job.{outcome.status}",
        job_id=job_id,
        tenant=outcome.tenant,
        model=outcome.model,
        attempt=outcome.attempts,
        reason=outcome.reason or None,
        duration_ms=round((time.monotonic() - started) * 1000),
        **_requeue_fields(outcome),
    )


def _requeue_fields(outcome: Outcome) -> dict[str, object]:
    """A requeued job's line also says when it runs again and, if the rate limiter sent it
    back, which limit (requests, tokens, queue, priority, cooldown, in_flight, room)."""
    if outcome.status != "requeued":
        return {}
    fields: dict[str, object] = {"retry_in_s": outcome.retry_in_s}
    if outcome.limited_by:
        fields["limited_by"] = outcome.limited_by
    return fields
