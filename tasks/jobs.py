"""``courier.run_job``: run one job, named by id (the message carries nothing else)."""

from __future__ import annotations

import logging
import time

from celery.exceptions import Reject

from tasks import lifecycle  # noqa: F401  (connects the worker's background loops)
from tasks.base import CourierTask
from workers.app import app
from workers.logs import job_event
from workers.metrics import count_finished
from workers.runner import NotClaimed, Outcome

log = logging.getLogger("courier.jobs")


@app.task(name="courier.run_job", base=CourierTask, bind=True, acks_late=True)
def run_job(self: CourierTask, job_id: str) -> None:
    started = time.monotonic()
    try:
        outcome = self.runner.run(job_id)
    except NotClaimed:
        log.warning("job %s: store unreachable before the claim; message handed back", job_id)
        raise Reject(requeue=True) from None
    if outcome.status == "skipped":
        return  # a duplicate or stale message: the job is not this run's to change
    if outcome.status == "requeued":
        self.metrics.job_requeued(outcome.reason)
    elif outcome.model is None:  # expired before its claim: the record names model, priority
        count_finished(self.runtime.redis, job_id, outcome.status)
    else:
        self.metrics.job_finished(outcome.status, outcome.model, outcome.priority)
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
